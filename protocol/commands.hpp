// The commands of docs/protocol.md §2.1 as types: a decoded term (JSON or
// ETF, already in the JSON model) becomes one of these structs, with its
// defaults filled in and every field checked against its cap, or an error
// that names the field. Pure: the daemon only carries typed commands out.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>

#include "protocol/framing.hpp"
#include "protocol/tls_settings.hpp"
#include "protocol/wire_error.hpp"

namespace tlsport::protocol {

/// Default and largest packet_size (docs/protocol.md §3).
inline constexpr std::size_t kDefaultPacketSize = std::size_t{64} << 20;
inline constexpr std::size_t kMaxPacketSize = std::size_t{1} << 30;
/// Longest host name (RFC 1035: 253 characters in text form).
inline constexpr std::size_t kMaxHostName = 253;
/// Longest client name given in hello.
inline constexpr std::size_t kMaxClientName = 255;
/// Longest timeout a command may ask for, in milliseconds (an hour; recv: a day).
inline constexpr long long kMaxTimeoutMs = 3600000;
inline constexpr long long kMaxRecvTimeoutMs = 24LL * 3600 * 1000;

/// A socket id (listeners and connections share the space).
using SocketId = std::uint32_t;

/// A socket's active mode (setopts).
struct ActiveMode {
  long long count = -1;  ///< < 0 active, 0 passive, N > 0 packets left
  bool once = false;     ///< "once" rather than a count (no passive event at zero)
};

/// Per-socket timeouts (unset: the daemon's defaults).
struct SocketTimeouts {
  std::optional<std::chrono::milliseconds> handshake;  ///< the TLS handshake
  std::optional<std::chrono::milliseconds> idle;       ///< no byte either way: close, timeout
  std::optional<std::chrono::milliseconds> close;      ///< the orderly close's wait
};

/// hello: names the client, asks for the daemon's version and capabilities.
struct HelloCommand {
  std::optional<std::string> name;  ///< a unique name for ownership transfer
  /// How long the daemon keeps this client's sockets if it dies, for a
  /// client that attaches under the same name (needs a name; capped by the daemon).
  std::optional<std::chrono::milliseconds> grace;
};

/// listen: opens a listening socket.
struct ListenCommand {
  std::string host = "0.0.0.0";                  ///< address to bind (a literal)
  std::uint16_t port = 0;                        ///< 0 picks a free port
  std::uint32_t backlog = 128;                   ///< kernel backlog and ready-connection bound
  Framing framing;                               ///< mode of accepted sockets
  std::size_t packet_size = kDefaultPacketSize;  ///< packet cap of accepted sockets
  SocketTimeouts timeouts;                       ///< of accepted sockets
  std::optional<ActiveMode> active;  ///< initial mode of accepted sockets (default active)
  TlsChoice tls;                     ///< absent: every accept brings its own
};

/// accept: waits for the listener's next handshaken connection.
struct AcceptCommand {
  SocketId id = 0;                   ///< the listener
  std::optional<ActiveMode> active;  ///< overrides the listener's
  SocketTimeouts timeouts;           ///< override the listener's (handshake: own-tls accepts)
  TlsChoice tls;                     ///< the accept's own TLS settings (seed 004)
};

/// cancel: withdraws an outstanding accept.
struct CancelCommand {
  nlohmann::json target;  ///< the accept's ref
};

/// connect: opens a connection (resolve, connect, handshake).
struct ConnectCommand {
  std::string host;                              ///< name or address
  std::uint16_t port = 0;                        ///< TCP port, 1..65535
  Framing framing;                               ///< the socket's mode
  std::size_t packet_size = kDefaultPacketSize;  ///< packet cap
  std::chrono::milliseconds timeout{30000};      ///< for the whole connect
  SocketTimeouts timeouts;                       ///< handshake (within timeout), idle, close
  std::optional<ActiveMode> active;              ///< initial mode (default active)
  TlsChoice tls;                                 ///< absent means secure defaults
};

/// deliver (with JSON/ETF data; a DATA frame is the same without a command).
struct DeliverCommand {
  SocketId id = 0;   ///< target socket
  std::string data;  ///< the bytes to send
};

/// close: orderly close of a socket or listener.
struct CloseCommand {
  SocketId id = 0;  ///< socket or listener
};

/// controlling_process: hands a socket or listener to another client.
struct ControllingProcessCommand {
  SocketId id = 0;                              ///< socket or listener
  std::variant<std::uint32_t, std::string> to;  ///< a client's number or name
};

/// setopts: active mode and packet_size of a socket.
struct SetoptsCommand {
  SocketId id = 0;                         ///< the socket
  std::optional<ActiveMode> active;        ///< new mode, if given
  std::optional<std::size_t> packet_size;  ///< new cap, if given
};

/// recv: the next packet of a passive socket.
struct RecvCommand {
  SocketId id = 0;                                       ///< the socket
  std::chrono::milliseconds timeout{kMaxRecvTimeoutMs};  ///< how long to wait
};

/// peername / sockname / info: facts about a socket.
struct PeernameCommand {
  SocketId id = 0;  ///< the socket
};
struct SocknameCommand {
  SocketId id = 0;  ///< the socket or listener
};
struct InfoCommand {
  SocketId id = 0;  ///< the socket
};

/// resolve: this host's name, or an address's name.
struct ResolveCommand {
  std::optional<std::string> address;  ///< an IP literal; unset: this host
};

/// stop: closes everything and ends the daemon.
struct StopCommand {};

/// tls_context: builds TLS settings once under a name for later "tls":"name".
struct TlsContextCommand {
  std::string name;      ///< the name (replaces a context of that name)
  TlsSettings settings;  ///< what it holds
};

/// starttls: a TLS handshake on a plain connection already in use.
struct StarttlsCommand {
  SocketId id = 0;                 ///< the plain socket
  TlsRole side = TlsRole::client;  ///< which end of the handshake we are
  TlsChoice tls;                   ///< settings or a context's name (absent: {})
  SocketTimeouts timeouts;         ///< handshake, idle, close from now on
};

/// stoptls: close_notify both ways, then plaintext on the same TCP connection.
struct StoptlsCommand {
  SocketId id = 0;                                   ///< the TLS socket
  std::optional<std::chrono::milliseconds> timeout;  ///< for the peer's close_notify
};

/// inject_ca: trusts more CAs on one connection and verifies its peer again.
struct InjectCaCommand {
  SocketId id = 0;         ///< the TLS socket
  std::string cacertfile;  ///< a file of CAs (PEM or DER)
  std::string cacert;      ///< or the CAs inline (PEM)
};

/// ciphers: the suites a connection could use.
struct CiphersCommand {
  SocketId id = 0;  ///< the TLS socket
};

/// stats: the daemon's counters and gauges.
struct StatsCommand {};

/// reload: reads every certificate, key and CA file again for listeners and
/// named contexts (all or nothing).
struct ReloadCommand {};

/// answer: the client's answer to a password_needed or verify_peer event.
struct AnswerCommand {
  std::uint64_t request = 0;            ///< the event's request number
  std::optional<std::string> password;  ///< for password_needed
  std::optional<bool> accept;           ///< for verify_peer
};

/// Every command but deliver-by-DATA-frame.
using Command =
    std::variant<HelloCommand, ListenCommand, AcceptCommand, CancelCommand, ConnectCommand,
                 DeliverCommand, CloseCommand, ControllingProcessCommand, SetoptsCommand,
                 RecvCommand, PeernameCommand, SocknameCommand, InfoCommand, ResolveCommand,
                 StopCommand, TlsContextCommand, StarttlsCommand, StoptlsCommand, InjectCaCommand,
                 CiphersCommand, AnswerCommand, StatsCommand, ReloadCommand>;

/// The outcome of parsing one decoded message.
struct ParsedCommand {
  nlohmann::json ref;              ///< the client's ref (null when none or unusable)
  std::optional<Command> command;  ///< the command, when valid
  std::optional<WireError> error;  ///< otherwise why not (bad_request, unsupported_protocol)
  std::optional<std::uint32_t> deliver_id;  ///< a refused deliver's socket, when it named one
};

/// Parses one decoded control message (an object with "op").
ParsedCommand parse_command(const nlohmann::json& message);

}  // namespace tlsport::protocol
