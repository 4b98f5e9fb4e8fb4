// Fuzz target: seed 004's SSLFlags parser, protocol::parse_ssl_flags, alone
// and as the "flags" field of a tls object.
//
// Input: the flags string.
//
// Checked against a reference reading of the documented syntax (words
// separated by white space, each flag followed by its argument): the same
// verdict and the same settings; parsing twice gives the same result; through
// a tls object the flags give the same settings, and a field given beside
// them overrides them.
#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "protocol/tls_settings.hpp"

namespace tlsport::fuzz {
namespace {

using nlohmann::json;
using protocol::TlsSettings;
using protocol::WireError;

/// Every setting, for comparing two parses.
json describe(const TlsSettings& s) {
  return {s.context_key(), s.server_name.value_or("<unset>"), s.verify_hostname.value_or("<unset>"),
          s.check_hostname, s.logfile};
}

/// The documented syntax, read plainly: -cert F (a second -cert is the key
/// when no -key came first), -key F, -cipher L, -verify 0|1|2, -log F,
/// -cacert F, -pass pass:TEXT|file:PATH|env:VAR; anything else, or a flag
/// without its argument, is refused.
bool reference(std::string_view flags, TlsSettings& out) {
  std::vector<std::string> words;
  std::string word;
  for (char c : flags) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(word);
  out.legacy_flags = true;
  if (words.size() % 2 != 0) return false;
  bool cert_seen = false;
  for (std::size_t i = 0; i < words.size(); i += 2) {
    const std::string& flag = words[i];
    const std::string& arg = words[i + 1];
    if (flag == "-cert") {
      if (cert_seen && out.keyfile.empty()) {
        out.keyfile = arg;
      } else {
        out.certfile = arg;
      }
      cert_seen = true;
    } else if (flag == "-key") {
      out.keyfile = arg;
    } else if (flag == "-cipher") {
      out.ciphers = arg;
    } else if (flag == "-verify") {
      if (arg != "0" && arg != "1" && arg != "2") return false;
      out.verify = arg[0] - '0';
    } else if (flag == "-log") {
      out.logfile = arg;
    } else if (flag == "-cacert") {
      out.cacertfile = arg;
    } else if (flag == "-pass") {
      const std::string_view a(arg);
      if (a.substr(0, 5) == "pass:") {
        out.password = arg.substr(5);
      } else if (a.substr(0, 5) == "file:") {
        out.password_file = arg.substr(5);
      } else if (a.substr(0, 4) == "env:") {
        out.password_env = arg.substr(4);
      } else {
        return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  using tlsport::protocol::parse_ssl_flags;
  using tlsport::protocol::parse_tls_choice;
  using tlsport::protocol::TlsChoice;
  const std::string flags(reinterpret_cast<const char*>(data), size);

  TlsSettings first;
  const auto error = parse_ssl_flags(flags, first);
  TlsSettings second;
  const auto error2 = parse_ssl_flags(flags, second);
  FUZZ_CHECK(error.has_value() == error2.has_value());
  FUZZ_CHECK(first.legacy_flags);
  if (error) {
    FUZZ_CHECK(error->kind() == "bad_request" && error->message == error2->message);
    FUZZ_CHECK(error->message.rfind("SSLFlags: ", 0) == 0);
  } else {
    FUZZ_CHECK(describe(first) == describe(second));
  }

  TlsSettings want;
  FUZZ_CHECK(reference(flags, want) == !error);
  if (error) return 0;
  FUZZ_CHECK(describe(first) == describe(want));

  // As "flags" in a tls object: the same settings; a field beside them wins.
  TlsChoice choice;
  const json object = {{"flags", flags}};
  FUZZ_CHECK(!parse_tls_choice(&object, choice));
  FUZZ_CHECK(choice.kind == TlsChoice::Kind::tls && describe(choice.settings) == describe(first));
  const json overridden = {{"flags", flags}, {"certfile", "override.pem"}, {"verify", 2}};
  FUZZ_CHECK(!parse_tls_choice(&overridden, choice));
  FUZZ_CHECK(choice.settings.certfile == "override.pem" && choice.settings.verify == 2);
  return 0;
}
