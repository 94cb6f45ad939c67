// tsm-deploy stand-in for <tvm/support/cuda/nvtx.h> (not shipped in the apache-tvm wheel).
// NVTX ranges only annotate CUDA profiles; the CPU-only device runtime needs a no-op.
#ifndef TSM_DEPLOY_TVM_SUPPORT_CUDA_NVTX_H_
#define TSM_DEPLOY_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SUPPORT_CUDA_NVTX_H_
