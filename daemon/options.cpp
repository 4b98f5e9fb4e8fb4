#include "daemon/options.hpp"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tlsport::daemon {
namespace {

using nlohmann::json;

/// Flags that take a value, with the configuration-file key of each.
const std::map<std::string, std::string> kValueFlags = {
    {"--config", "config"},
    {"--control", "control"},
    {"--packet", "packet"},
    {"--terms", "terms"},
    {"--unix", "unix"},
    {"--handshake-timeout", "handshake_timeout_ms"},
    {"--idle-timeout", "idle_timeout_ms"},
    {"--close-timeout", "close_timeout_ms"},
    {"--client-buffer", "client_buffer"},
    {"--socket-buffer", "socket_buffer"},
    {"--max-message", "max_message"},
    {"--max-sockets", "max_sockets"},
    {"--peer-memory-budget", "peer_memory_budget"},
    {"--stats-listen", "stats_listen"},
    {"--max-grace", "max_grace_ms"},
    {"--log-level", "log_level"},
};

bool to_size(const json& v, std::size_t lo, std::size_t hi, std::size_t& out) {
  long long n = 0;
  if (v.is_number_integer()) {
    n = v.get<long long>();
  } else if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 15)
      return false;
    n = std::stoll(s);
  } else {
    return false;
  }
  if (n < static_cast<long long>(lo) || n > static_cast<long long>(hi)) return false;
  out = static_cast<std::size_t>(n);
  return true;
}

std::string text_of(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

/// Applies one setting; returns an error message or "".
std::string apply(const std::string& key, const json& v, Options& o) {
  std::size_t n = 0;
  if (key == "control") {
    // The design card's framings: packet-N and binary_packet-N are the binary
    // encoding with N-byte headers, raw is lines, asn1 is one BER TLV each.
    std::string s = text_of(v);
    auto framing = protocol::parse_framing(s);
    if (s == "binary") {
      o.control = protocol::ControlEncoding::binary;
    } else if (s == "lines" || s == "raw") {
      o.control = protocol::ControlEncoding::lines;
    } else if (s == "asn1") {
      o.control = protocol::ControlEncoding::asn1;
    } else if (framing && framing->kind == protocol::FramingKind::packet) {
      o.control = protocol::ControlEncoding::binary;
      o.packet = framing->header_bytes;
    } else {
      return "control must be binary, lines (raw), packet:N, binary_packet:N (N = 1, 2, 4) "
             "or asn1, not " +
             s;
    }
  } else if (key == "packet") {
    if (!to_size(v, 1, 4, n) || n == 3) return "packet must be 1, 2 or 4, not " + text_of(v);
    o.packet = static_cast<unsigned>(n);
  } else if (key == "terms") {
    std::string s = text_of(v);
    if (s == "json")
      o.terms = protocol::TermFormat::json;
    else if (s == "etf")
      o.terms = protocol::TermFormat::etf;
    else
      return "terms must be json or etf, not " + s;
  } else if (key == "unix") {
    if (!v.is_string() || v.get<std::string>().empty()) return "unix must be a path";
    o.unix_path = v.get<std::string>();
  } else if (key == "stdio") {
    if (!v.is_boolean()) return "stdio must be true or false";
    o.use_stdio = v.get<bool>();
  } else if (key == "nouse_stdio") {
    if (!v.is_boolean()) return "nouse_stdio must be true or false";
    o.nouse_stdio = v.get<bool>();
  } else if (key == "handshake_timeout_ms") {
    if (!to_size(v, 1, 3600000, n)) return "handshake timeout must be 1..3600000 ms";
    o.handshake_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "idle_timeout_ms") {
    if (!to_size(v, 0, 86400000, n)) return "idle timeout must be 0..86400000 ms (0: none)";
    o.idle_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "close_timeout_ms") {
    if (!to_size(v, 1, 3600000, n)) return "close timeout must be 1..3600000 ms";
    o.close_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "client_buffer" || key == "socket_buffer") {
    if (!to_size(v, 4096, std::size_t{1} << 30, n)) return key + " must be 4096..1073741824 bytes";
    (key == "client_buffer" ? o.client_buffer : o.socket_buffer) = n;
  } else if (key == "max_message") {
    if (!to_size(v, 1024, (std::size_t{1} << 30) + 65536, n)) return "max_message out of range";
    o.max_message = n;
  } else if (key == "max_grace_ms") {
    if (!to_size(v, 0, 86400000, n)) return "max_grace_ms must be 0..86400000 ms";
    o.max_grace_ms = static_cast<unsigned>(n);
  } else if (key == "core_dumps") {
    if (!v.is_boolean()) return "core_dumps must be true or false";
    o.core_dumps = v.get<bool>();
  } else if (key == "stats_listen") {
    if (!v.is_string() || v.get<std::string>().find(':') == std::string::npos)
      return "stats_listen must be ADDRESS:PORT, e.g. 127.0.0.1:9464";
    o.stats_listen = v.get<std::string>();
  } else if (key == "peer_memory_budget") {
    if (!to_size(v, 1u << 20, std::size_t{1} << 40, n))
      return "peer_memory_budget must be 1048576..1099511627776 bytes";
    o.peer_memory_budget = n;
  } else if (key == "max_sockets") {
    if (!to_size(v, 1, 10000000, n)) return "max_sockets must be 1..10000000";
    o.max_sockets = n;
  } else if (key == "log_level") {
    if (!parse_log_level(text_of(v), o.log_level))
      return "log level must be debug, info, warning, error or none";
  } else {
    return "unknown setting " + key;
  }
  return "";
}

}  // namespace

std::string usage_text() {
  return R"(Usage: tlsportd [OPTIONS]

tlsportd owns TLS sockets on behalf of the programs that control it. By
default it is a port program: it speaks the control protocol on stdin/stdout
and exits when stdin reaches EOF. See docs/protocol.md.

Options:
  --control ENCODING       on stdin/stdout: binary (default; = packet:4), packet:N or
                           binary_packet:N (N = 1, 2, 4), lines (= raw), asn1
  --packet 1|2|4           frame header size of the binary encoding (default 4)
  --terms json|etf         term format before the client's first message (default json)
  --nouse-stdio            use fds 3 (in) and 4 (out) instead of stdin/stdout
  --unix PATH              also serve clients on a Unix socket (mode 0600);
                           stdin/stdout is then not used unless --stdio is given
  --stdio                  keep stdin/stdout as a control channel with --unix
  --config FILE            read settings from a JSON file (flags override it)
  --handshake-timeout MS   TLS handshake timeout (default 30000)
  --idle-timeout MS        close sockets idle this long, kind timeout (default 0: never)
  --close-timeout MS       longest wait of an orderly close (default 5000)
  --client-buffer BYTES    a client's output high-water mark (default 1048576)
  --socket-buffer BYTES    a socket's send-buffer high-water mark (default 1048576)
  --max-message BYTES      largest control message (default 67174400)
  --max-sockets N          most sockets and listeners open at once (default 100000)
  --peer-memory-budget B   bytes all sockets may hold of partial packets (default 268435456)
  --stats-listen A:P       serve Prometheus metrics at http://A:P/metrics (off by default;
                           give a loopback address)
  --log-level LEVEL        debug, info, warning (default), error, none
  --max-grace MS           longest grace period a client may ask for (default 300000)
  --core-dumps             allow core dumps (off: the process holds keys)
  --help                   show this text
  --version                show the version
)";
}

ParseResult parse_options(int argc, char** argv, Options& options) {
  std::vector<std::pair<std::string, json>> settings;
  std::string config_path;
  bool stdio_flag = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") return {ParseResult::Action::help, ""};
    if (arg == "--version") return {ParseResult::Action::version, ""};
    if (arg == "--core-dumps") {
      settings.emplace_back("core_dumps", true);
      continue;
    }
    if (arg == "--nouse-stdio" || arg == "--stdio") {
      if (has_value) return {ParseResult::Action::error, arg + " takes no value"};
      settings.emplace_back(arg == "--stdio" ? "stdio" : "nouse_stdio", true);
      if (arg == "--stdio") stdio_flag = true;
      continue;
    }
    auto it = kValueFlags.find(arg);
    if (it == kValueFlags.end())
      return {ParseResult::Action::error, "unknown option " + arg + " (see --help)"};
    if (!has_value) {
      if (i + 1 >= argc) return {ParseResult::Action::error, arg + " needs a value"};
      value = argv[++i];
    }
    if (it->second == "config")
      config_path = value;
    else
      settings.emplace_back(it->second, value);
  }
  Options result;
  if (!config_path.empty()) {
    std::ifstream file(config_path);
    if (!file) return {ParseResult::Action::error, "cannot read config file " + config_path};
    json config = json::parse(file, nullptr, false);
    if (config.is_discarded() || !config.is_object())
      return {ParseResult::Action::error, config_path + " is not a JSON object"};
    bool config_stdio = config.contains("stdio");
    for (auto& [key, value] : config.items()) {
      std::string err = apply(key, value, result);
      if (!err.empty()) return {ParseResult::Action::error, config_path + ": " + err};
    }
    if (!result.unix_path.empty() && !config_stdio) result.use_stdio = false;
  }
  bool unix_flag = false;
  for (auto& [key, value] : settings) {
    std::string err = apply(key, value, result);
    if (!err.empty()) return {ParseResult::Action::error, err};
    if (key == "unix") unix_flag = true;
  }
  // --unix alone makes a socket daemon; --stdio keeps the port channel too.
  if (unix_flag && !stdio_flag) result.use_stdio = false;
  if (!result.use_stdio && result.unix_path.empty())
    return {ParseResult::Action::error, "nothing to serve: give --unix PATH or use stdio"};
  options = result;
  return {};
}

}  // namespace tlsport::daemon
