// tsm-deploy stand-in for <tvm/support/serializer.h> (not shipped in the apache-tvm wheel).
//
// The byte layout must match what the host's TVM writes into exported libraries (the Relax VM
// executable and its constants are deserialised on the device with these routines):
//   * arithmetic and enum values: their little-endian bytes;
//   * strings and sequences: a uint64 element count followed by the elements;
//   * maps: a uint64 count followed by key, value pairs;
//   * DLDataType: code (u8), bits (u8), lanes (u16); DLDevice: type (i32), id (i32).
// Every supported device (aarch64, armv7, x86-64) is little-endian, so no byte swapping is done;
// the static_assert below stops a build for a big-endian target rather than corrupt data.
#ifndef TSM_DEPLOY_TVM_SUPPORT_SERIALIZER_H_
#define TSM_DEPLOY_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tsm-deploy's TVM serializer stand-in supports little-endian targets only");

namespace tvm {
namespace support {

namespace detail {

inline void WriteCount(Stream* strm, size_t count) {
  const uint64_t n = static_cast<uint64_t>(count);
  strm->Write(&n, sizeof(n));
}

inline bool ReadCount(Stream* strm, uint64_t* count) {
  return strm->Read(count, sizeof(*count)) == sizeof(*count);
}

}  // namespace detail

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) { strm->Write(&value, sizeof(T)); }
  static bool Read(Stream* strm, T* out) { return strm->Read(out, sizeof(T)) == sizeof(T); }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Underlying = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& value) {
    Serializer<Underlying>::Write(strm, static_cast<Underlying>(value));
  }
  static bool Read(Stream* strm, T* out) {
    Underlying raw;
    if (!Serializer<Underlying>::Read(strm, &raw)) return false;
    *out = static_cast<T>(raw);
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& value) {
    detail::WriteCount(strm, value.size());
    if (!value.empty()) strm->Write(value.data(), value.size());
  }
  static bool Read(Stream* strm, std::string* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->resize(static_cast<size_t>(n));
    return n == 0 || strm->Read(out->data(), out->size()) == out->size();
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& value) {
    detail::WriteCount(strm, value.size());
    if (value.size() != 0) strm->Write(value.data(), value.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string tmp;
    if (!Serializer<std::string>::Read(strm, &tmp)) return false;
    *out = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& values) {
    detail::WriteCount(strm, values.size());
    if constexpr (std::is_arithmetic_v<T>) {
      // Contiguous POD data: one bulk write instead of one call per element.
      if (!values.empty()) strm->Write(values.data(), values.size() * sizeof(T));
    } else {
      for (const T& v : values) Serializer<T>::Write(strm, v);
    }
  }
  static bool Read(Stream* strm, std::vector<T>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->resize(static_cast<size_t>(n));
    if constexpr (std::is_arithmetic_v<T>) {
      const size_t nbytes = out->size() * sizeof(T);
      return nbytes == 0 || strm->Read(out->data(), nbytes) == nbytes;
    } else {
      for (T& v : *out) {
        if (!Serializer<T>::Read(strm, &v)) return false;
      }
      return true;
    }
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& value) {
    Serializer<A>::Write(strm, value.first);
    Serializer<B>::Write(strm, value.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& value) {
    detail::WriteCount(strm, value.size());
    for (const auto& kv : value) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      std::pair<K, V> kv;
      if (!Serializer<std::pair<K, V>>::Read(strm, &kv)) return false;
      out->insert(std::move(kv));
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& values) {
    detail::WriteCount(strm, values.size());
    for (size_t i = 0; i < values.size(); ++i) Serializer<T>::Write(strm, values[i]);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Array<T> result;
    for (uint64_t i = 0; i < n; ++i) {
      T v;
      if (!Serializer<T>::Read(strm, &v)) return false;
      result.push_back(std::move(v));
    }
    *out = std::move(result);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& value) {
    detail::WriteCount(strm, value.size());
    for (const auto& kv : value) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Map<K, V> result;
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V val;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &val)) return false;
      result.Set(std::move(key), std::move(val));
    }
    *out = std::move(result);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& dtype) {
    Serializer<uint8_t>::Write(strm, dtype.code);
    Serializer<uint8_t>::Write(strm, dtype.bits);
    Serializer<uint16_t>::Write(strm, dtype.lanes);
  }
  static bool Read(Stream* strm, DLDataType* out) {
    return Serializer<uint8_t>::Read(strm, &out->code) &&
           Serializer<uint8_t>::Read(strm, &out->bits) &&
           Serializer<uint16_t>::Read(strm, &out->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& dev) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(dev.device_type));
    Serializer<int32_t>::Write(strm, dev.device_id);
  }
  static bool Read(Stream* strm, DLDevice* out) {
    int32_t type;
    if (!Serializer<int32_t>::Read(strm, &type)) return false;
    out->device_type = static_cast<DLDeviceType>(type);
    return Serializer<int32_t>::Read(strm, &out->device_id);
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TSM_DEPLOY_TVM_SUPPORT_SERIALIZER_H_
