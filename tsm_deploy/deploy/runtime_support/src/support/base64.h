// tsm-deploy stand-in for TVM's src/support/base64.h (not shipped in the apache-tvm wheel).
// tensor.cc uses these streams only for the JSON form of a tensor, which a deployed model does
// not need; they are kept correct but simple: whole-buffer encode/decode via tvm-ffi's base64
// helpers instead of TVM's incremental codec.
#ifndef TSM_DEPLOY_TVM_SRC_SUPPORT_BASE64_H_
#define TSM_DEPLOY_TVM_SRC_SUPPORT_BASE64_H_

#include <tvm/ffi/extra/base64.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Buffers raw bytes; Finish() writes their base64 text to the underlying stream.
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* out) : out_(out) {}

  size_t Read(void*, size_t) final { return 0; }  // write-only stream
  size_t Write(const void* ptr, size_t size) final {
    raw_.append(static_cast<const char*>(ptr), size);
    return size;
  }

  void Finish() {
    ffi::String text = ffi::Base64Encode(TVMFFIByteArray{raw_.data(), raw_.size()});
    out_->Write(text.data(), text.size());
    raw_.clear();
  }

 private:
  Stream* out_;
  std::string raw_;
};

// Decodes the whole base64 text of the underlying stream on InitPosition(), then serves reads.
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* in) : in_(in) {}

  void InitPosition() {
    std::string text;
    char chunk[4096];
    for (size_t n; (n = in_->Read(chunk, sizeof(chunk))) != 0;) text.append(chunk, n);
    // Base64 text embedded in JSON may be surrounded by whitespace.
    text.erase(std::remove_if(text.begin(), text.end(),
                              [](unsigned char c) { return std::isspace(c) != 0; }),
               text.end());
    decoded_ = ffi::Base64Decode(TVMFFIByteArray{text.data(), text.size()});
    pos_ = 0;
  }

  size_t Read(void* ptr, size_t size) final {
    const size_t n = std::min(size, decoded_.size() - pos_);
    if (n != 0) std::memcpy(ptr, decoded_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }  // read-only stream

 private:
  Stream* in_;
  ffi::Bytes decoded_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SRC_SUPPORT_BASE64_H_
