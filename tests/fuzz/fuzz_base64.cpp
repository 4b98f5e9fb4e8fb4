// Fuzz target: base64 (RFC 4648 with padding, as in the lines encoding).
//
// Input: text to decode, and also bytes to encode.
//
// Checked against a plain bit-by-bit decoder: decode accepts exactly what the
// reference accepts and gives the same bytes; a refusal appends nothing; and
// encode followed by decode gives back any bytes, in encoded_size() characters.
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "protocol/base64.hpp"

namespace tlsport::fuzz {
namespace {

namespace base64 = protocol::base64;

/// The value of a base64 digit, or -1.
int digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/// Decodes as the header describes it, one digit at a time: up to two '='
/// at the end, only when they complete a group of four; no lone digit at the
/// end; any other character is refused. Leftover bits are dropped.
bool reference_decode(std::string_view in, std::string& out) {
  std::size_t pads = 0;
  while (pads < 2 && pads < in.size() && in[in.size() - 1 - pads] == '=') ++pads;
  if (pads > 0 && in.size() % 4 != 0) return false;
  const std::string_view text = in.substr(0, in.size() - pads);
  if (text.size() % 4 == 1) return false;
  unsigned bits = 0;
  int nbits = 0;
  for (char c : text) {
    const int d = digit(c);
    if (d < 0) return false;
    bits = (bits << 6 | static_cast<unsigned>(d)) & 0xFFFFFF;
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out.push_back(static_cast<char>(bits >> nbits & 0xFF));
    }
  }
  return true;
}

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string prefix = "kept";  // a decode appends: what was there stays

  std::string got = prefix;
  const bool ok = base64::decode(in, got);
  std::string want = prefix;
  const bool want_ok = reference_decode(in, want);
  FUZZ_CHECK(ok == want_ok);
  FUZZ_CHECK(ok ? got == want : got == prefix);

  std::string text = prefix;
  base64::encode(in, text);
  FUZZ_CHECK(text.size() == prefix.size() + base64::encoded_size(in.size()));
  std::string back = prefix;
  FUZZ_CHECK(base64::decode(std::string_view(text).substr(prefix.size()), back));
  FUZZ_CHECK(back == prefix + std::string(in));
  if (ok) {
    // Decoded bytes encode to text that decodes to them again.
    std::string again;
    base64::encode(std::string_view(got).substr(prefix.size()), again);
    std::string bytes;
    FUZZ_CHECK(base64::decode(again, bytes) && bytes == got.substr(prefix.size()));
  }
  return 0;
}
