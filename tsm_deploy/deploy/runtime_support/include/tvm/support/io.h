// tsm-deploy stand-in for <tvm/support/io.h>, which the apache-tvm wheel references from its
// public runtime headers but does not ship. Written for this project: it provides only what the
// runtime sources we cross-build use (a byte stream plus typed Read/Write that dispatch to
// Serializer<T>, specialised in <tvm/support/serializer.h>).
#ifndef TSM_DEPLOY_TVM_SUPPORT_IO_H_
#define TSM_DEPLOY_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Serializer<T> is specialised per type; `enabled` lets Stream reject unsupported types at
// compile time instead of failing at link time.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // Raw byte I/O; both return the number of bytes actually transferred.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialised for T");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialised for T");
    return Serializer<T>::Read(this, out);
  }

  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write<T>(values[i]);
  }

  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SUPPORT_IO_H_
