// The smallest useful controlling client of tlsportd: it spawns the daemon
// in port mode (binary frames, JSON terms, --packet 4 on stdin/stdout),
// listens on the echo and bulk ports, keeps accepts outstanding, writes
// every DATA frame of an echo socket back unchanged (a fromsocket frame is
// a deliver frame), and serves the bulk requests. What it costs is close
// to nothing, so the daemon's own ceiling shows.
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common.hpp"

namespace bench {
namespace {

using json = nlohmann::json;

constexpr int kAccepts = 16;                        // outstanding accepts per listener
constexpr std::uint64_t kUnconfirmed = 512 * 1024;  // delivered before asking for a reply

struct Sock {
  bool bulk = false;
  char kind = 0;
  std::string head;
  std::uint64_t remaining = 0, unconfirmed = 0;
  bool busy = false, pinged = false;
};

class MinClient {
 public:
  MinClient(const std::string& daemon, const std::string& cert, const std::string& key)
      : cert_(cert), key_(key) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) die("pipe: " + std::string(std::strerror(errno)));
    pid_ = fork();
    if (pid_ < 0) die("fork failed");
    if (pid_ == 0) {
      dup2(down[0], 0);
      dup2(up[1], 1);
      for (int fd : {down[0], down[1], up[0], up[1]}) close(fd);
      execl(daemon.c_str(), daemon.c_str(), static_cast<char*>(nullptr));
      std::fprintf(stderr, "cannot run %s: %s\n", daemon.c_str(), std::strerror(errno));
      _exit(127);
    }
    close(down[0]);
    close(up[1]);
    to_ = down[1];
    from_ = up[0];
    fcntl(to_, F_SETFL, fcntl(to_, F_GETFL) | O_NONBLOCK);
  }

  int run() {
    const char* modes[2] = {"packet:2", "raw"};
    for (int i = 0; i < 2; ++i)
      control({{"op", "listen"},
               {"ref", i + 1},
               {"host", "127.0.0.1"},
               {"port", 0},
               {"mode", modes[i]},
               {"backlog", 4096},
               {"tls", {{"certfile", cert_}, {"keyfile", key_}}}});
    for (;;) {
      if (!io()) return 1;
      if (ports_[0] != 0 && ports_[1] != 0 && !announced_) {
        std::printf("PORTS echo=%d bulk=%d\n", ports_[0], ports_[1]);
        std::fflush(stdout);
        announced_ = true;
        for (int i = 0; i < 2; ++i)
          for (int k = 0; k < kAccepts; ++k) accept(i);
      }
    }
  }

 private:
  /// One poll: writes what can be written, reads and handles what came.
  bool io() {
    pollfd fds[2] = {{from_, POLLIN, 0}, {to_, static_cast<short>(out_.empty() ? 0 : POLLOUT), 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return false;
    if (fds[1].revents != 0 && !flush()) return false;
    if (fds[0].revents != 0) {
      std::size_t old = in_.size();
      in_.resize(old + sizeof g_read_buffer);
      ssize_t n = read(from_, &in_[old], sizeof g_read_buffer);
      if (n <= 0) {
        std::fprintf(stderr, "tlsportd went away\n");
        return false;
      }
      in_.resize(old + static_cast<std::size_t>(n));
      frames();
      return flush();
    }
    return true;
  }

  bool flush() {
    while (!out_.empty()) {
      ssize_t n = write(to_, out_.data(), out_.size());
      if (n > 0) {
        out_.erase(0, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
  }

  void frames() {
    std::size_t pos = 0;
    while (in_.size() - pos >= 4) {
      auto* p = reinterpret_cast<const unsigned char*>(in_.data() + pos);
      std::size_t len =
          (std::size_t(p[0]) << 24) | (std::size_t(p[1]) << 16) | (std::size_t(p[2]) << 8) | p[3];
      if (in_.size() - pos < 4 + len) break;
      if (len >= 5 && p[4] == 1)
        data(p, len);
      else if (len >= 1 && p[4] == 0)
        message(json::parse(in_.begin() + static_cast<std::ptrdiff_t>(pos + 5),
                            in_.begin() + static_cast<std::ptrdiff_t>(pos + 4 + len)));
      pos += 4 + len;
    }
    in_.erase(0, pos);
  }

  static std::uint32_t be32(const unsigned char* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
           p[3];
  }

  void header(std::uint32_t id, std::size_t n) {
    std::size_t len = 5 + n;
    unsigned char h[9] = {static_cast<unsigned char>(len >> 24),
                          static_cast<unsigned char>(len >> 16),
                          static_cast<unsigned char>(len >> 8),
                          static_cast<unsigned char>(len),
                          1,
                          static_cast<unsigned char>(id >> 24),
                          static_cast<unsigned char>(id >> 16),
                          static_cast<unsigned char>(id >> 8),
                          static_cast<unsigned char>(id)};
    out_.append(reinterpret_cast<const char*>(h), sizeof h);
  }

  /// A fromsocket frame (p: its 4-byte length first).
  void data(const unsigned char* p, std::size_t len) {
    std::uint32_t id = be32(p + 5);
    auto it = socks_.find(id);
    if (it == socks_.end()) return;
    Sock& s = it->second;
    if (!s.bulk) {  // echo: the same frame back is a deliver
      out_.append(reinterpret_cast<const char*>(p), 4 + len);
      return;
    }
    const unsigned char* d = p + 9;
    std::size_t n = len - 5;
    if (s.kind == 0) {
      std::size_t take = std::min(n, kRequestSize - s.head.size());
      s.head.append(reinterpret_cast<const char*>(d), take);
      d += take;
      n -= take;
      if (s.head.size() < kRequestSize) return;
      auto* req = reinterpret_cast<const unsigned char*>(s.head.data());
      s.kind = static_cast<char>(req[0]);
      s.remaining = get_u64(req + 1);
      std::string().swap(s.head);
      if (s.kind == 'D') return pump(id, s);
    }
    if (s.kind == 'U' && s.remaining > 0) {
      s.remaining -= std::min<std::uint64_t>(s.remaining, n);
      if (s.remaining == 0) {
        header(id, 1);
        out_.push_back('K');
      }
    }
  }

  void pump(std::uint32_t id, Sock& s) {
    while (s.remaining > 0 && !s.busy && s.unconfirmed < kUnconfirmed) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(s.remaining, kChunk));
      header(id, n);
      out_.append(reinterpret_cast<const char*>(g_zeros), n);
      s.remaining -= n;
      s.unconfirmed += n;
    }
    if (s.remaining == 0) {
      control({{"op", "close"}, {"ref", next_ref_++}, {"id", id}});
      socks_.erase(id);
    } else if (s.unconfirmed >= kUnconfirmed && !s.pinged) {
      // Its reply comes after any busy event the data caused.
      s.pinged = true;
      pings_[next_ref_] = id;
      control({{"op", "peername"}, {"ref", next_ref_++}, {"id", id}});
    }
  }

  void message(const json& m) {
    if (m.contains("event")) {
      const std::string ev = m["event"];
      std::uint32_t id = m.value("id", 0u);
      auto it = socks_.find(id);
      if (ev == "socket_closed") {
        if (it != socks_.end()) socks_.erase(it);
      } else if (it != socks_.end() && (ev == "busy" || ev == "ready")) {
        it->second.busy = ev == "busy";
        if (!it->second.busy && it->second.kind == 'D') pump(id, it->second);
      }
      return;
    }
    long long ref = m.value("ref", 0LL);
    bool ok = m.value("ok", false);
    if (ref == 1 || ref == 2) {
      if (!ok) die("listen failed: " + m.dump());
      listeners_[ref - 1] = m["id"];
      ports_[ref - 1] = m["port"];
      return;
    }
    if (auto a = accepts_.find(ref); a != accepts_.end()) {
      int which = a->second;
      accepts_.erase(a);
      if (ok)
        socks_[m["id"].get<std::uint32_t>()].bulk = which == 1;
      else
        std::fprintf(stderr, "accept failed: %s\n", m.dump().c_str());
      accept(which);
      return;
    }
    if (auto pg = pings_.find(ref); pg != pings_.end()) {
      std::uint32_t id = pg->second;
      pings_.erase(pg);
      if (auto it = socks_.find(id); it != socks_.end()) {
        it->second.pinged = false;
        it->second.unconfirmed = 0;
        pump(id, it->second);
      }
      return;
    }
    if (!ok && m.value("id", 0u) == 0) std::fprintf(stderr, "tlsportd: %s\n", m.dump().c_str());
  }

  void accept(int which) {
    accepts_[next_ref_] = which;
    control({{"op", "accept"}, {"ref", next_ref_++}, {"id", listeners_[which]}});
  }

  void control(const json& m) {
    std::string body = m.dump();
    std::size_t len = body.size() + 1;
    unsigned char h[5] = {static_cast<unsigned char>(len >> 24),
                          static_cast<unsigned char>(len >> 16),
                          static_cast<unsigned char>(len >> 8), static_cast<unsigned char>(len), 0};
    out_.append(reinterpret_cast<const char*>(h), sizeof h);
    out_ += body;
  }

  std::string cert_, key_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string in_, out_;
  std::unordered_map<std::uint32_t, Sock> socks_;
  std::unordered_map<long long, int> accepts_;
  std::unordered_map<long long, std::uint32_t> pings_;
  long long next_ref_ = 10;
  std::uint32_t listeners_[2] = {0, 0};
  int ports_[2] = {0, 0};
  bool announced_ = false;
};

}  // namespace

int serve_tlsportd(const Flags& flags) {
  raise_fd_limit();
  MinClient client(flags.str("daemon"), flags.str("cert"), flags.str("key"));
  return client.run();
}

}  // namespace bench
