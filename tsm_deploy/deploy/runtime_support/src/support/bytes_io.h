// tsm-deploy stand-in for TVM's src/support/bytes_io.h (not shipped in the apache-tvm wheel).
// In-memory streams used to (de)serialise modules embedded in an exported shared library.
#ifndef TSM_DEPLOY_TVM_SRC_SUPPORT_BYTES_IO_H_
#define TSM_DEPLOY_TVM_SRC_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Appends everything written to a caller-owned std::string.
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* out) : out_(out) {}

  size_t Read(void*, size_t) final { return 0; }  // write-only stream
  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

// Reads sequentially from a byte buffer. For std::string the caller keeps the buffer alive (all
// call sites pass a buffer that outlives the stream); ffi::Bytes is reference-counted and kept.
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesInStream(const std::string& buf) : data_(buf.data()), size_(buf.size()) {}
  explicit BytesInStream(const ffi::Bytes& buf)
      : owner_(buf), data_(owner_.data()), size_(owner_.size()) {}

  size_t Read(void* ptr, size_t size) final {
    const size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }  // read-only stream

 private:
  ffi::Bytes owner_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SRC_SUPPORT_BYTES_IO_H_
