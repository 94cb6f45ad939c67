// Guest side of the ExecuTorch peer: a small C library over ExecuTorch's C++ runtime, loaded by
// guest_peer.py through ctypes. Cross-built on the host against the headers and libraries of
// ExecuTorch's aarch64 wheel (executorch/include, executorch/lib), so the guest needs no torch:
// the wheel's Python bindings link libtorch, and no CPU-only aarch64 torch on PyPI runs them on a
// Cortex-A72 (see peers.py).
//
// tsm_et_load(path, threads, err, errlen) -> handle (NULL and a message on failure)
// tsm_et_io(handle, &n_inputs, &n_outputs)
// tsm_et_input_nbytes(handle, i) / tsm_et_output_nbytes(handle, i)
// tsm_et_run(handle, inputs, outputs, err, errlen) -> 0 on success: inputs[i] (float32, the
//     method's input i, contiguous) are copied in, the method runs, outputs[i] receive the outputs.

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

// libexecutorch_threadpool.so's pool (its header is not in the wheel): one function, declared here.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace et = executorch::runtime;
using executorch::extension::FileDataLoader;

namespace {

constexpr size_t kMethodPoolBytes = 64u << 20;  // the method's own structures (values, kernels, delegates)
constexpr size_t kTempPoolBytes = 16u << 20;    // scratch for kernels and delegates, reset after each call

struct Runner {
  std::unique_ptr<et::Result<FileDataLoader>> loader;
  std::unique_ptr<et::Result<et::Program>> program;
  std::vector<std::vector<uint8_t>> planned;
  std::vector<et::Span<uint8_t>> spans;
  std::unique_ptr<et::HierarchicalAllocator> planned_memory;
  std::vector<uint8_t> method_pool, temp_pool;
  std::unique_ptr<et::MemoryAllocator> method_allocator, temp_allocator;
  std::unique_ptr<et::MemoryManager> memory;
  std::unique_ptr<et::Result<et::Method>> method;
  // per input: its sizes and dim order (the tensors passed to set_input point into these)
  std::vector<std::vector<int32_t>> sizes;
  std::vector<std::vector<uint8_t>> dim_orders;
  std::vector<std::vector<int32_t>> strides;
  std::vector<size_t> input_nbytes;
};

void fail(char* err, size_t errlen, const char* what, et::Error code) {
  if (err && errlen) snprintf(err, errlen, "%s (ExecuTorch error 0x%x)", what, static_cast<unsigned>(code));
}

}  // namespace

extern "C" {

void* tsm_et_load(const char* path, int threads, char* err, size_t errlen) {
  et::runtime_init();
  if (threads > 0) {
    auto* pool = executorch::extension::threadpool::get_threadpool();
    if (pool == nullptr || !pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads))) {
      fail(err, errlen, "cannot set the thread pool size", et::Error::Internal);
      return nullptr;
    }
  }
  auto r = std::make_unique<Runner>();
  r->loader = std::make_unique<et::Result<FileDataLoader>>(FileDataLoader::from(path));
  if (!r->loader->ok()) return fail(err, errlen, "cannot open the program", r->loader->error()), nullptr;
  r->program = std::make_unique<et::Result<et::Program>>(et::Program::load(&r->loader->get()));
  if (!r->program->ok()) return fail(err, errlen, "cannot load the program", r->program->error()), nullptr;
  et::Program& program = r->program->get();
  auto name = program.get_method_name(0);
  if (!name.ok()) return fail(err, errlen, "the program has no method", name.error()), nullptr;
  auto meta = program.method_meta(*name);
  if (!meta.ok()) return fail(err, errlen, "no method metadata", meta.error()), nullptr;
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    r->planned.emplace_back(static_cast<size_t>(meta->memory_planned_buffer_size(i).get()));
  }
  for (auto& buffer : r->planned) r->spans.emplace_back(buffer.data(), buffer.size());
  r->planned_memory = std::make_unique<et::HierarchicalAllocator>(
      et::Span<et::Span<uint8_t>>(r->spans.data(), r->spans.size()));
  r->method_pool.resize(kMethodPoolBytes);
  r->temp_pool.resize(kTempPoolBytes);
  r->method_allocator = std::make_unique<et::MemoryAllocator>(kMethodPoolBytes, r->method_pool.data());
  r->temp_allocator = std::make_unique<et::MemoryAllocator>(kTempPoolBytes, r->temp_pool.data());
  r->memory = std::make_unique<et::MemoryManager>(r->method_allocator.get(), r->planned_memory.get(),
                                                  r->temp_allocator.get());
  r->method = std::make_unique<et::Result<et::Method>>(program.load_method(*name, r->memory.get()));
  if (!r->method->ok()) return fail(err, errlen, "cannot load the method", r->method->error()), nullptr;
  for (size_t i = 0; i < meta->num_inputs(); ++i) {
    auto info = meta->input_tensor_meta(i);
    if (!info.ok() || info->scalar_type() != executorch::aten::ScalarType::Float) {
      fail(err, errlen, "an input is not a float32 tensor", info.ok() ? et::Error::InvalidArgument : info.error());
      return nullptr;
    }
    r->sizes.emplace_back(info->sizes().begin(), info->sizes().end());
    r->dim_orders.emplace_back(info->dim_order().begin(), info->dim_order().end());
    std::vector<int32_t> strides(r->sizes.back().size());
    int32_t stride = 1;
    for (size_t d = strides.size(); d-- > 0;) {
      if (r->dim_orders.back()[d] != d) {  // the host passes contiguous (NCHW) arrays
        fail(err, errlen, "an input is not contiguous in its dim order", et::Error::NotSupported);
        return nullptr;
      }
      strides[d] = stride;
      stride *= r->sizes.back()[d];
    }
    r->strides.push_back(std::move(strides));
    r->input_nbytes.push_back(info->nbytes());
  }
  return r.release();
}

void tsm_et_io(void* handle, int* n_inputs, int* n_outputs) {
  auto* r = static_cast<Runner*>(handle);
  *n_inputs = static_cast<int>(r->input_nbytes.size());
  *n_outputs = static_cast<int>(r->method->get().outputs_size());
}

long tsm_et_input_nbytes(void* handle, int i) { return static_cast<long>(static_cast<Runner*>(handle)->input_nbytes[i]); }

long tsm_et_output_nbytes(void* handle, int i) {
  const auto& value = static_cast<Runner*>(handle)->method->get().get_output(i);
  return value.isTensor() ? static_cast<long>(value.toTensor().nbytes()) : -1;
}

int tsm_et_run(void* handle, float** inputs, float** outputs, char* err, size_t errlen) {
  auto* r = static_cast<Runner*>(handle);
  et::Method& method = r->method->get();
  for (size_t i = 0; i < r->input_nbytes.size(); ++i) {
    executorch::aten::TensorImpl impl(executorch::aten::ScalarType::Float, static_cast<ssize_t>(r->sizes[i].size()),
                                      r->sizes[i].data(), inputs[i], r->dim_orders[i].data(),
                                      r->strides[i].data());
    et::Error status = method.set_input(et::EValue(executorch::aten::Tensor(&impl)), i);
    if (status != et::Error::Ok) return fail(err, errlen, "set_input failed", status), 1;
  }
  et::Error status = method.execute();
  if (status != et::Error::Ok) return fail(err, errlen, "execute failed", status), 1;
  for (size_t i = 0; i < method.outputs_size(); ++i) {
    const auto& tensor = method.get_output(i).toTensor();
    std::memcpy(outputs[i], tensor.const_data_ptr(), tensor.nbytes());
  }
  return 0;
}

void tsm_et_free(void* handle) { delete static_cast<Runner*>(handle); }

}  // extern "C"
