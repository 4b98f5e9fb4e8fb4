// RFC 4648 base64 (with padding), for data in the lines encoding.
#pragma once

#include <string>
#include <string_view>

namespace tlsport::protocol::base64 {

/// Appends the base64 of `in` to `out`.
void encode(std::string_view in, std::string& out);

/// Decodes `in` into `out` (appending). Accepts missing padding; rejects any
/// other character. Returns false on bad input.
bool decode(std::string_view in, std::string& out);

/// Length of the base64 text for n bytes.
constexpr std::size_t encoded_size(std::size_t n) { return (n + 2) / 3 * 4; }

}  // namespace tlsport::protocol::base64
