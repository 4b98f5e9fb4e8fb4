// Erlang's external term format <-> the JSON model of docs/protocol.md §1.1,
// so that an Erlang node can talk to the daemon with OTP alone.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tlsport::protocol::etf {

/// Nesting depth cap for decoded terms.
inline constexpr int kMaxDepth = 32;
/// Cap on the number of terms in one message: a command needs a handful, and
/// a frame of millions of one-byte terms would decode to gigabytes.
inline constexpr std::size_t kMaxTerms = 65536;

/// Decodes one external term (starting with the version byte 131) that spans
/// all of `in`. Returns false and sets `error` (a message for people) on
/// malformed input, trailing bytes, excess depth, integers beyond 64 bits or a
/// count larger than the bytes left. Binaries decode to json binary values.
bool decode(std::string_view in, nlohmann::json& out, std::string& error);

/// Appends the external term of `value` (with the version byte) to `out`.
void encode(const nlohmann::json& value, std::string& out);

}  // namespace tlsport::protocol::etf
