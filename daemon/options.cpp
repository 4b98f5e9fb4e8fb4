#include "daemon/options.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "protocol/tls_settings.hpp"

namespace tlsport::daemon {
namespace {

using nlohmann::json;

/// One setting: its configuration key, its flag, and its line in --help.
struct Setting {
  const char* key;      ///< the configuration-file key
  const char* flag;     ///< the command-line flag that overrides it
  const char* metavar;  ///< what the flag takes ("" for none)
  const char* help;     ///< the --help text
};

// The order is that of --help and of the manual page.
const Setting kSettings[] = {
    {"control", "--control", "ENCODING",
     "on stdin/stdout: binary (default; = packet:4), packet:N or\n"
     "binary_packet:N (N = 1, 2, 4), lines (= raw), asn1"},
    {"packet", "--packet", "1|2|4", "frame header size of the binary encoding (default 4)"},
    {"terms", "--terms", "json|etf",
     "term format before the client's first message (default json)"},
    {"nouse_stdio", "--nouse-stdio", "", "use fds 3 (in) and 4 (out) instead of stdin/stdout"},
    {"stdio", "--stdio", "", "keep stdin/stdout as a control channel with a Unix socket"},
    {"stdio", "--no-stdio", "", "do not use stdin/stdout (a Unix socket must be served)"},
    {"unix", "--unix", "PATH",
     "serve clients on a Unix socket; stdin/stdout is then not\n"
     "used unless --stdio is given"},
    {"socket_mode", "--socket-mode", "MODE", "mode of the socket file, octal (default 0600)"},
    {"allow_uids", "--allow-uids", "LIST",
     "users (names or uids, comma-separated) let in on the\n"
     "Unix socket besides the daemon's own user"},
    {"allow_gids", "--allow-gids", "LIST", "groups (names or gids) whose members are let in"},
    {"user", "--user", "USER", "switch to this user after binding (when started as root)"},
    {"group", "--group", "GROUP", "switch to this group (default: the user's group)"},
    {"max_clients", "--max-clients", "N", "most control clients at once (default 1024)"},
    {"max_sockets", "--max-sockets", "N",
     "most sockets and listeners open at once (default 100000)"},
    {"max_message", "--max-message", "BYTES", "largest control message (default 67174400)"},
    {"client_buffer", "--client-buffer", "BYTES",
     "a client's output high-water mark (default 1048576)"},
    {"socket_buffer", "--socket-buffer", "BYTES",
     "a socket's send-buffer high-water mark (default 1048576)"},
    {"peer_memory_budget", "--peer-memory-budget", "BYTES",
     "bytes all sockets may hold of partial packets\n(default 268435456)"},
    {"handshake_timeout_ms", "--handshake-timeout", "MS", "TLS handshake timeout (default 30000)"},
    {"idle_timeout_ms", "--idle-timeout", "MS",
     "close sockets idle this long, kind timeout\n(default 0: never)"},
    {"close_timeout_ms", "--close-timeout", "MS",
     "longest wait of an orderly close (default 5000)"},
    {"max_grace_ms", "--max-grace", "MS",
     "longest grace period a client may ask for\n(default 300000)"},
    {"stats_listen", "--stats-listen", "ADDRESS:PORT",
     "serve Prometheus metrics at http://ADDRESS:PORT/metrics\n"
     "(off by default; give a loopback address)"},
    {"core_dumps", "--core-dumps", "", "allow core dumps (off: the process holds keys)"},
    {"core_dumps", "--no-core-dumps", "", "no core dumps (the default)"},
    {"log_level", "--log-level", "LEVEL", "debug, info, warning (default), error, none"},
    {"log_destination", "--log-destination", "WHERE", "stderr (default), file or syslog"},
    {"log_file", "--log-file", "PATH", "log to this file (appended to)"},
    {"log_destination", "--log-syslog", "", "log to syslog (same as --log-destination syslog)"},
    {"syslog_socket", "--syslog-socket", "PATH", "the syslog socket (default /dev/log)"},
};

/// Keys kept for features still to come: refused with a clear message.
const std::map<std::string, std::string> kReserved = {
    {"contexts", "named TLS contexts"},
};

/// Keys an operator may guess for a setting that has another name.
const std::map<std::string, std::string> kDidYouMean = {
    {"stats", "stats_listen"},
};

const Setting* by_flag(const std::string& flag) {
  for (const Setting& s : kSettings)
    if (flag == s.flag) return &s;
  return nullptr;
}

std::string text_of(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

/// An integer in [lo, hi], given as a JSON number or (from a flag) a string of digits.
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

std::string range_error(const json& v, std::size_t lo, std::size_t hi, const char* unit = "") {
  return "must be an integer " + std::to_string(lo) + ".." + std::to_string(hi) + unit + ", not " +
         text_of(v);
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

/// A user by name or number; "" or an error message.
std::string find_user(const std::string& name, uid_t& uid, gid_t* gid, std::string* canonical) {
  std::vector<char> buf(16384);
  struct passwd pw, *found = nullptr;
  int rc = all_digits(name) ? getpwuid_r(static_cast<uid_t>(std::stoul(name)), &pw, buf.data(),
                                         buf.size(), &found)
                            : getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (found) {
    uid = pw.pw_uid;
    if (gid) *gid = pw.pw_gid;
    if (canonical) *canonical = pw.pw_name;
    return "";
  }
  if (all_digits(name) && !gid) {  // a bare uid needs no passwd entry to be let in
    uid = static_cast<uid_t>(std::stoul(name));
    return "";
  }
  return "no user " + name + (rc != 0 ? std::string(" (") + std::strerror(rc) + ")" : "");
}

/// A group by name or number; "" or an error message.
std::string find_group(const std::string& name, gid_t& gid) {
  if (all_digits(name)) {
    gid = static_cast<gid_t>(std::stoul(name));
    return "";
  }
  std::vector<char> buf(16384);
  struct group gr, *found = nullptr;
  int rc = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
  if (found) {
    gid = gr.gr_gid;
    return "";
  }
  return "no group " + name + (rc != 0 ? std::string(" (") + std::strerror(rc) + ")" : "");
}

/// The names of a list: a JSON array of names and numbers, or (from a flag) "a,b,1000".
bool list_items(const json& v, bool from_flag, std::vector<std::string>& out) {
  if (v.is_string() && from_flag) {
    std::stringstream ss(v.get<std::string>());
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) out.push_back(item);
    return true;
  }
  if (!v.is_array()) return false;
  for (const json& e : v) {
    if (e.is_number_unsigned())
      out.push_back(std::to_string(e.get<unsigned long long>()));
    else if (e.is_string() && !e.get<std::string>().empty())
      out.push_back(e.get<std::string>());
    else
      return false;
  }
  return true;
}

/// Where the settings being applied come from.
struct Source {
  std::string base_dir;     ///< relative paths are relative to this ("" = as given)
  std::string config_path;  ///< the file, or "" for flags
  bool from_flag = false;
};

/// Which settings were given explicitly, and so win over defaults worked out later.
struct Given {
  std::optional<bool> stdio;
  bool log_destination = false;
  bool log_file = false;
  /// user and group are looked up once all are known: the value and where it was given.
  std::optional<std::pair<std::string, std::string>> user, group;
};

std::string where(const Source& src, const char* key, const char* flag) {
  return src.from_flag ? std::string(flag) + ": " : src.config_path + ": key \"" + key + "\": ";
}

std::string path_value(const json& v, const Source& src, std::string& out) {
  if (!v.is_string() || v.get<std::string>().empty()) return "must be a path";
  std::filesystem::path p(v.get<std::string>());
  if (p.is_relative() && !src.base_dir.empty()) p = std::filesystem::path(src.base_dir) / p;
  out = p.lexically_normal().string();
  return "";
}

/// Applies one setting; returns an error message or "".
std::string apply(const std::string& key, const json& v, Options& o, const Source& src,
                  Given& given) {
  std::size_t n = 0;
  if (key == "control") {
    // The design card's framings: packet:N and binary_packet:N are the binary
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
      return "must be binary, lines (raw), packet:N, binary_packet:N (N = 1, 2, 4) or asn1, "
             "not " +
             s;
    }
  } else if (key == "packet") {
    if (!to_size(v, 1, 4, n) || n == 3) return "must be 1, 2 or 4, not " + text_of(v);
    o.packet = static_cast<unsigned>(n);
  } else if (key == "terms") {
    std::string s = text_of(v);
    if (s == "json")
      o.terms = protocol::TermFormat::json;
    else if (s == "etf")
      o.terms = protocol::TermFormat::etf;
    else
      return "must be json or etf, not " + s;
  } else if (key == "unix") {
    std::string path;
    if (auto err = path_value(v, src, path); !err.empty()) return err;
    if (path.size() >= sizeof(sockaddr_un::sun_path))
      return "too long for a Unix socket (" + std::to_string(path.size()) + " bytes, at most " +
             std::to_string(sizeof(sockaddr_un::sun_path) - 1) + ")";
    o.unix_path = path;
  } else if (key == "stdio") {
    if (!v.is_boolean()) return "must be true or false";
    o.use_stdio = v.get<bool>();
    given.stdio = o.use_stdio;
  } else if (key == "nouse_stdio") {
    if (!v.is_boolean()) return "must be true or false";
    o.nouse_stdio = v.get<bool>();
  } else if (key == "socket_mode") {
    std::string s = v.is_string() ? v.get<std::string>() : "";
    if (s.empty() || s.size() > 4 || s.find_first_not_of("01234567") != std::string::npos)
      return "must be an octal mode as a string, such as \"0660\", not " + text_of(v);
    unsigned mode = static_cast<unsigned>(std::stoul(s, nullptr, 8));
    if (mode & ~0777u) return "may only hold permission bits (0..0777), not " + s;
    if ((mode & 0600) != 0600)
      return "must let the daemon's own user read and write (0600), not " + s;
    o.socket_mode = mode;
  } else if (key == "allow_uids" || key == "allow_gids") {
    std::vector<std::string> items;
    if (!list_items(v, src.from_flag, items)) return "must be a list of names or numbers";
    bool uids = key == "allow_uids";
    uids ? o.allow_uids.clear() : o.allow_gids.clear();
    for (const std::string& item : items) {
      if (uids) {
        uid_t uid = 0;
        if (auto err = find_user(item, uid, nullptr, nullptr); !err.empty()) return err;
        o.allow_uids.push_back(uid);
      } else {
        gid_t gid = 0;
        if (auto err = find_group(item, gid); !err.empty()) return err;
        o.allow_gids.push_back(gid);
      }
    }
  } else if (key == "user") {
    if ((!v.is_string() || v.get<std::string>().empty()) && !v.is_number_unsigned())
      return "must be a user name or uid";
    given.user.emplace(text_of(v), where(src, "user", "--user"));
  } else if (key == "group") {
    if ((!v.is_string() || v.get<std::string>().empty()) && !v.is_number_unsigned())
      return "must be a group name or gid";
    given.group.emplace(text_of(v), where(src, "group", "--group"));
  } else if (key == "handshake_timeout_ms") {
    if (!to_size(v, 1, 3600000, n)) return range_error(v, 1, 3600000, " ms");
    o.handshake_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "idle_timeout_ms") {
    if (!to_size(v, 0, 86400000, n)) return range_error(v, 0, 86400000, " ms (0: none)");
    o.idle_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "close_timeout_ms") {
    if (!to_size(v, 1, 3600000, n)) return range_error(v, 1, 3600000, " ms");
    o.close_timeout_ms = static_cast<unsigned>(n);
  } else if (key == "max_grace_ms") {
    if (!to_size(v, 0, 86400000, n)) return range_error(v, 0, 86400000, " ms");
    o.max_grace_ms = static_cast<unsigned>(n);
  } else if (key == "peer_memory_budget") {
    if (!to_size(v, std::size_t{1} << 20, std::size_t{1} << 40, n))
      return range_error(v, std::size_t{1} << 20, std::size_t{1} << 40, " bytes");
    o.peer_memory_budget = n;
  } else if (key == "stats_listen") {
    std::string address;
    std::uint16_t port = 0;
    if (!v.is_string() || !split_address_and_port(v.get<std::string>(), address, port))
      return "must be ADDRESS:PORT (an IP address, IPv6 in brackets, and a port 0..65535), "
             "such as 127.0.0.1:9464, not " +
             text_of(v);
    o.stats_listen = v.get<std::string>();
  } else if (key == "core_dumps") {
    if (!v.is_boolean()) return "must be true or false";
    o.core_dumps = v.get<bool>();
  } else if (key == "client_buffer" || key == "socket_buffer") {
    if (!to_size(v, 4096, std::size_t{1} << 30, n))
      return range_error(v, 4096, std::size_t{1} << 30, " bytes");
    (key == "client_buffer" ? o.client_buffer : o.socket_buffer) = n;
  } else if (key == "max_message") {
    if (!to_size(v, 1024, (std::size_t{1} << 30) + 65536, n))
      return range_error(v, 1024, (std::size_t{1} << 30) + 65536, " bytes");
    o.max_message = n;
  } else if (key == "max_sockets") {
    if (!to_size(v, 1, 10000000, n)) return range_error(v, 1, 10000000);
    o.max_sockets = n;
    o.max_sockets_given = true;
  } else if (key == "max_clients") {
    if (!to_size(v, 1, 65536, n)) return range_error(v, 1, 65536);
    o.max_clients = n;
  } else if (key == "log_level") {
    if (!parse_log_level(text_of(v), o.log_level))
      return "must be debug, info, warning, error or none, not " + text_of(v);
  } else if (key == "log_destination") {
    if (!parse_log_destination(text_of(v), o.log_destination))
      return "must be stderr, file or syslog, not " + text_of(v);
    given.log_destination = true;
  } else if (key == "log_file") {
    if (auto err = path_value(v, src, o.log_file); !err.empty()) return err;
    given.log_file = true;
    if (src.from_flag) {
      o.log_destination = LogDestination::file;
      given.log_destination = true;
    }
  } else if (key == "syslog_socket") {
    if (auto err = path_value(v, src, o.syslog_socket); !err.empty()) return err;
  } else if (auto r = kReserved.find(key); r != kReserved.end()) {
    return "reserved for " + r->second + ", not supported by this version yet";
  } else if (auto m = kDidYouMean.find(key); m != kDidYouMean.end()) {
    return "not a setting; did you mean \"" + m->second + "\"? (see tlsportd(8))";
  } else {
    return "not a setting (see tlsportd(8))";
  }
  return "";
}

ParseResult fail(std::string message) {
  ParseResult r;
  r.action = ParseResult::Action::error;
  r.error = std::move(message);
  return r;
}

/// Reads and applies the configuration file; "" or the error, naming the file.
std::string read_config(const std::string& path, Options& o, Given& given) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return path + ": cannot read: " + std::strerror(errno);
  std::stringstream ss;
  ss << file.rdbuf();
  const std::string text = ss.str();
  std::set<std::string> seen;
  std::string duplicate;
  json config;
  try {
    config = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth == 1 && event == json::parse_event_t::key && duplicate.empty() &&
          !seen.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const json::parse_error& e) {
    // e.byte: 1-based offset of the byte where parsing failed.
    std::size_t end = std::min<std::size_t>(e.byte ? e.byte - 1 : 0, text.size());
    std::size_t line = 1, line_start = 0;
    for (std::size_t i = 0; i < end; ++i)
      if (text[i] == '\n') ++line, line_start = i + 1;
    std::string what = e.what();
    if (auto colon = what.find(": "); colon != std::string::npos && what.find("column") < colon)
      what = what.substr(colon + 2);
    else if (auto bracket = what.find("] "); bracket != std::string::npos)
      what = what.substr(bracket + 2);
    return path + ":" + std::to_string(line) + ":" + std::to_string(end - line_start + 1) +
           ": JSON syntax error: " + what;
  }
  if (!config.is_object()) return path + ": the configuration must be a JSON object {...}";
  if (!duplicate.empty()) return path + ": key \"" + duplicate + "\" is given twice";
  Source src;
  std::error_code ec;
  src.base_dir = std::filesystem::absolute(path, ec).parent_path().string();
  src.config_path = path;
  for (auto& [key, value] : config.items()) {
    if (auto err = apply(key, value, o, src, given); !err.empty())
      return path + ": key \"" + key + "\": " + err;
  }
  return "";
}

}  // namespace

bool split_address_and_port(const std::string& text, std::string& address, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = text.substr(0, colon);
  std::string digits = text.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos || std::stoul(digits) > 65535)
    return false;
  if (!protocol::is_ip_literal(host)) return false;
  address = host;
  port = static_cast<std::uint16_t>(std::stoul(digits));
  return true;
}

std::string usage_text() {
  std::string out = R"(Usage: tlsportd [OPTIONS]

tlsportd owns TLS sockets on behalf of the programs that control it. By
default it is a port program: it speaks the control protocol on stdin/stdout
and exits when stdin reaches EOF. See tlsportd(8) and docs/protocol.md.

Options (each but --config and --check overrides the configuration key of
the same name, with "-" for "_"; the keys of --handshake-timeout,
--idle-timeout, --close-timeout and --max-grace end in _ms, and --no-X sets
key X to false):
  --config FILE            read settings from a JSON file
  --check                  check the settings and the configuration, then exit
)";
  for (const Setting& s : kSettings) {
    std::string left = std::string("  ") + s.flag + (*s.metavar ? " " : "") + s.metavar;
    std::string help = s.help;
    std::string indent(27, ' ');
    for (std::size_t pos = 0; (pos = help.find('\n', pos)) != std::string::npos; pos += 28)
      help.insert(pos + 1, indent);
    if (left.size() < 27)
      out += left + std::string(27 - left.size(), ' ') + help + "\n";
    else
      out += left + "\n" + indent + help + "\n";
  }
  out += "  --help                   show this text\n";
  out += "  --version                show the version\n";
  return out;
}

ParseResult parse_options(int argc, char** argv, Options& options, bool socket_activated) {
  std::vector<std::pair<const Setting*, json>> flags;
  ParseResult result;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") return {ParseResult::Action::help, "", ""};
    if (arg == "--version") return {ParseResult::Action::version, "", ""};
    if (arg == "--check") {
      if (has_value) return fail(arg + " takes no value");
      result.action = ParseResult::Action::check;
      continue;
    }
    if (arg == "--config") {
      if (!has_value) {
        if (i + 1 >= argc) return fail(arg + " needs a value");
        value = argv[++i];
      }
      if (value.empty()) return fail("--config needs a file name");
      result.config_path = value;
      continue;
    }
    const Setting* setting = by_flag(arg);
    if (!setting) return fail("unknown option " + arg + " (see --help)");
    if (!*setting->metavar) {
      if (has_value) return fail(arg + " takes no value");
      if (arg == "--log-syslog")
        flags.emplace_back(setting, "syslog");
      else
        flags.emplace_back(setting, arg.rfind("--no-", 0) != 0);  // --no-X sets X false
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return fail(arg + " needs a value");
      value = argv[++i];
    }
    flags.emplace_back(setting, value);
  }

  Options o;
  Given given;
  if (!result.config_path.empty()) {
    if (auto err = read_config(result.config_path, o, given); !err.empty()) return fail(err);
  }
  Source src;
  src.from_flag = true;
  // A user given by flag brings its own group, unless --group is given too.
  bool user_flag = false, group_flag = false;
  for (auto& [setting, value] : flags) {
    user_flag |= std::string(setting->key) == "user";
    group_flag |= std::string(setting->key) == "group";
  }
  if (user_flag && !group_flag) given.group.reset();
  for (auto& [setting, value] : flags) {
    if (auto err = apply(setting->key, value, o, src, given); !err.empty())
      return fail(std::string(setting->flag) + ": " + err);
  }
  if (given.user) {
    uid_t uid = 0;
    gid_t gid = 0;
    if (auto err = find_user(given.user->first, uid, &gid, &o.user_name); !err.empty()) {
      if (!all_digits(given.user->first) || !given.group) return fail(given.user->second + err);
      uid = static_cast<uid_t>(std::stoul(given.user->first));  // a uid with no passwd entry
    }
    o.user = uid;
    o.group = gid;
  }
  if (given.group) {
    gid_t gid = 0;
    if (auto err = find_group(given.group->first, gid); !err.empty())
      return fail(given.group->second + err);
    o.group = gid;
  }

  // A Unix socket makes a socket daemon; stdio then only if asked for.
  if (!given.stdio) o.use_stdio = o.unix_path.empty() && !socket_activated;
  if (given.log_file && !given.log_destination) o.log_destination = LogDestination::file;
  if (o.log_destination == LogDestination::file && o.log_file.empty())
    return fail("log_destination is file but no log_file is given");
  if (!o.use_stdio && o.unix_path.empty() && !socket_activated)
    return fail("nothing to serve: give --unix PATH or use stdio");
  if (socket_activated && o.use_stdio && o.nouse_stdio)
    return fail("socket activation passes fd 3, which --nouse-stdio would read from");
  options = o;
  return result;
}

void raise_fd_limit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) return;
  rlim_t target = rl.rlim_max;
  if (target == RLIM_INFINITY) {
    // The kernel caps descriptors at fs.nr_open whatever the limit says.
    std::ifstream nr("/proc/sys/fs/nr_open");
    unsigned long long n = 0;
    if (!(nr >> n) || n <= rl.rlim_cur) return;
    target = n;
  }
  rl.rlim_cur = target;
  setrlimit(RLIMIT_NOFILE, &rl);
}

std::vector<std::string> option_warnings(const Options& o) {
  std::vector<std::string> out;
  struct rlimit rl;
  if (o.max_sockets_given && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY) {
    // One descriptor per socket, one per client, and a few of the daemon's own.
    const std::size_t own = 16;
    std::size_t wanted = o.max_sockets + o.max_clients + own;
    if (wanted > rl.rlim_max) {
      std::size_t fits = rl.rlim_max > o.max_clients + own ? rl.rlim_max - o.max_clients - own : 0;
      out.push_back("max_sockets " + std::to_string(o.max_sockets) +
                    " is more than the descriptor "
                    "limit allows (hard limit " +
                    std::to_string(rl.rlim_max) + ", about " + std::to_string(fits) +
                    " sockets with max_clients " + std::to_string(o.max_clients) +
                    "); raise it (ulimit -Hn, LimitNOFILE=) "
                    "or lower max_sockets");
    }
  }
  return out;
}

}  // namespace tlsport::daemon
