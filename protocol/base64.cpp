// RFC 4648 base64, table-driven: data on the lines encoding can be megabytes,
// so both directions work on whole groups of 3 bytes / 4 characters.
#include "protocol/base64.hpp"

#include <array>
#include <cstdint>

namespace tlsport::protocol::base64 {
namespace {

/// The RFC 4648 §4 alphabet.
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks a byte that is not in the alphabet ('=' included: padding is handled apart).
constexpr std::uint8_t kInvalid = 0xFF;

/// Character -> 6-bit value, kInvalid for anything else.
constexpr std::array<std::uint8_t, 256> make_decode_table() {
  std::array<std::uint8_t, 256> table{};
  for (auto& v : table) v = kInvalid;
  for (std::uint8_t i = 0; i < 64; ++i) table[static_cast<unsigned char>(kAlphabet[i])] = i;
  return table;
}
constexpr std::array<std::uint8_t, 256> kDecode = make_decode_table();

}  // namespace

void encode(std::string_view in, std::string& out) {
  const std::size_t old_size = out.size();
  out.resize(old_size + encoded_size(in.size()));
  char* dst = out.data() + old_size;
  const auto* src = reinterpret_cast<const unsigned char*>(in.data());
  std::size_t n = in.size();
  for (; n >= 3; n -= 3, src += 3, dst += 4) {
    const std::uint32_t v = (std::uint32_t{src[0]} << 16) | (std::uint32_t{src[1]} << 8) | src[2];
    dst[0] = kAlphabet[v >> 18];
    dst[1] = kAlphabet[(v >> 12) & 0x3F];
    dst[2] = kAlphabet[(v >> 6) & 0x3F];
    dst[3] = kAlphabet[v & 0x3F];
  }
  if (n == 0) return;
  std::uint32_t v = std::uint32_t{src[0]} << 16;
  if (n == 2) v |= std::uint32_t{src[1]} << 8;
  dst[0] = kAlphabet[v >> 18];
  dst[1] = kAlphabet[(v >> 12) & 0x3F];
  dst[2] = n == 2 ? kAlphabet[(v >> 6) & 0x3F] : '=';
  dst[3] = '=';
}

bool decode(std::string_view in, std::string& out) {
  // Padding is optional, but when present it must complete the last group.
  std::size_t len = in.size();
  std::size_t pads = 0;
  while (len > 0 && pads < 2 && in[len - 1] == '=') --len, ++pads;
  if (pads > 0 && in.size() % 4 != 0) return false;
  if (len % 4 == 1) return false;  // 6 bits cannot make a byte

  const std::size_t old_size = out.size();
  out.resize(old_size + len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1));
  char* dst = out.data() + old_size;
  const auto* src = reinterpret_cast<const unsigned char*>(in.data());
  std::size_t n = len;
  // Any invalid character sets the high bit of `bad`; checked once per group.
  for (; n >= 4; n -= 4, src += 4, dst += 3) {
    const std::uint32_t a = kDecode[src[0]], b = kDecode[src[1]], c = kDecode[src[2]],
                        d = kDecode[src[3]];
    if ((a | b | c | d) & 0x80) {
      out.resize(old_size);
      return false;
    }
    const std::uint32_t v = (a << 18) | (b << 12) | (c << 6) | d;
    dst[0] = static_cast<char>(v >> 16);
    dst[1] = static_cast<char>(v >> 8);
    dst[2] = static_cast<char>(v);
  }
  if (n == 0) return true;
  const std::uint32_t a = kDecode[src[0]], b = kDecode[src[1]], c = n == 3 ? kDecode[src[2]] : 0;
  if ((a | b | c) & 0x80) {
    out.resize(old_size);
    return false;
  }
  const std::uint32_t v = (a << 18) | (b << 12) | (c << 6);
  dst[0] = static_cast<char>(v >> 16);
  if (n == 3) dst[1] = static_cast<char>(v >> 8);
  return true;
}

}  // namespace tlsport::protocol::base64
