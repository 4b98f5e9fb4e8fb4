// Fuzz target: the ETF codec (Erlang's external term format <-> JSON model).
//
// Input: an external term, version byte 131 first.
//
// Checked: decode never crashes, leaks or throws; where it succeeds, the
// value re-encoded decodes to the same value with every string turned into a
// binary (what the encoder writes for a string), and from then on decode and
// encode are exact inverses, byte for byte; nesting and size stay within the
// caps the decoder promises.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "protocol/etf.hpp"

namespace tlsport::fuzz {
namespace {

using nlohmann::json;
namespace etf = protocol::etf;

/// `v` as the encoder writes it: string values become binaries (keys stay).
json as_written(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    return json::binary(json::binary_t::container_type(s.begin(), s.end()));
  }
  if (v.is_object()) {
    json out = json::object();
    for (const auto& [k, item] : v.items()) out[k] = as_written(item);
    return out;
  }
  if (v.is_array()) {
    json out = json::array();
    for (const auto& item : v) out.push_back(as_written(item));
    return out;
  }
  return v;
}

/// Containers nested in `v` (a scalar is 0).
int depth(const json& v) {
  int deepest = 0;
  if (v.is_structured()) {
    for (const auto& item : v) deepest = std::max(deepest, depth(item));
    return deepest + 1;
  }
  return 0;
}

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  json first;
  std::string error;
  if (!etf::decode(in, first, error)) {
    FUZZ_CHECK(!error.empty());
    return 0;
  }
  FUZZ_CHECK(error.empty());
  FUZZ_CHECK(depth(first) <= etf::kMaxDepth);

  std::string wire;
  etf::encode(first, wire);
  json second;
  FUZZ_CHECK(etf::decode(wire, second, error));
  FUZZ_CHECK(second == as_written(first));

  // From here on the codec is exact both ways.
  std::string wire2;
  etf::encode(second, wire2);
  FUZZ_CHECK(wire2 == wire);
  json third;
  FUZZ_CHECK(etf::decode(wire2, third, error));
  FUZZ_CHECK(third == second);
  return 0;
}
