// tsm-deploy stand-in for TVM's src/support/utils.h (not shipped in the apache-tvm wheel).
// Only the helper the CPU runtime sources use (thread_pool.cc validates CPU ids with it).
#ifndef TSM_DEPLOY_TVM_SRC_SUPPORT_UTILS_H_
#define TSM_DEPLOY_TVM_SRC_SUPPORT_UTILS_H_

#include <algorithm>
#include <cctype>
#include <string>

namespace tvm {
namespace support {

// True for a non-empty string of decimal digits.
inline bool IsNumber(const std::string& s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SRC_SUPPORT_UTILS_H_
