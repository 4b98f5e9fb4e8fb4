// The load generator: one thread, TLS 1.3 on non-blocking sockets with
// readiness waits. Workloads (docs/benchmarks.md):
//   bulk       one connection downloads --bytes N          → MB/s
//   upload     one connection uploads --bytes N            → MB/s
//   echo       --conns C connections, 100-byte {packet,2} round trips for
//              --seconds T after --warmup W                → rt/s, p50, p99
//   handshake  --conns C workers: connect, full handshake, one 1-byte echo,
//              close; for --seconds T after --warmup W     → handshakes/s
//   resume     the same, each worker resuming its last session (ticket)
//   idle       open --conns N (at most --pace P at once), one echo each,
//              hold them; "OPEN" on stdout, then close all when a line (or
//              EOF) arrives on stdin, and say "CLOSED"
// Measurement windows are announced as "MARK start" / "MARK end" lines;
// results as one "RESULT key=value ..." line.
#include <algorithm>
#include <functional>
#include <iostream>
#include <memory>

#include "common.hpp"

namespace bench {
namespace {

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void mark(const char* what) {
  std::printf("MARK %s\n", what);
  std::fflush(stdout);
}

struct Shared {
  asio::io_context io{1};
  SSL_CTX* ctx = client_context();
  tcp::endpoint server;
  std::uint64_t failures = 0;
  std::string last_error;
};

/// One client connection. Every step takes a continuation; a failure ends
/// the connection and calls the continuation with false.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  using Next = std::function<void(bool)>;

  explicit Conn(Shared& shared) : shared_(shared), sock_(shared.io) {}
  ~Conn() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }

  void connect(SSL_SESSION* session, Next next) {
    sock_.async_connect(shared_.server,
                        [self = shared_from_this(), session, next](std::error_code ec) {
                          if (ec) return self->fail("connect: " + ec.message(), next);
                          std::error_code ignored;
                          self->sock_.set_option(tcp::no_delay(true), ignored);
                          self->sock_.non_blocking(true, ignored);
                          self->ssl_ = SSL_new(self->shared_.ctx);
                          if (self->ssl_ == nullptr)
                            return self->fail("SSL_new: " + openssl_error(), next);
                          SSL_set_fd(self->ssl_, self->sock_.native_handle());
                          SSL_set_connect_state(self->ssl_);
                          if (session != nullptr) SSL_set_session(self->ssl_, session);
                          self->handshake(next);
                        });
  }

  /// Writes n bytes from p (which stays valid until next runs).
  void write(const unsigned char* p, std::size_t n, Next next) {
    while (n > 0) {
      int r = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(n, 1 << 30)));
      if (r > 0) {
        p += r;
        n -= static_cast<std::size_t>(r);
        continue;
      }
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return wait(e, [this, p, n, next] { write(p, n, next); });
      return fail("write: " + openssl_error(), next);
    }
    next(true);
  }

  /// Reads exactly n bytes (and no more), throwing them away.
  void read(std::uint64_t n, Next next) {
    while (n > 0) {
      int r = SSL_read(ssl_, g_read_buffer,
                       static_cast<int>(std::min<std::uint64_t>(n, sizeof g_read_buffer)));
      if (r > 0) {
        n -= static_cast<std::uint64_t>(r);
        continue;
      }
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return wait(e, [this, n, next] { read(n, next); });
      if (e == SSL_ERROR_ZERO_RETURN) return fail("the server closed early", next);
      return fail("read: " + openssl_error(), next);
    }
    next(true);
  }

  /// close_notify (not waiting for the server's), then the TCP close.
  void close() {
    if (ssl_ != nullptr && SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
    ERR_clear_error();
    std::error_code ignored;
    sock_.close(ignored);
  }

  bool reused() const { return ssl_ != nullptr && SSL_session_reused(ssl_) == 1; }
  SSL_SESSION* session() const { return ssl_ != nullptr ? SSL_get1_session(ssl_) : nullptr; }

 private:
  template <class F>
  void wait(int ssl_error, F f) {
    sock_.async_wait(wait_type_for(ssl_error), [self = shared_from_this(), f](std::error_code ec) {
      if (!ec) f();
    });
  }

  void handshake(Next next) {
    int r = SSL_do_handshake(ssl_);
    if (r == 1) return next(true);
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return wait(e, [this, next] { handshake(next); });
    fail("handshake: " + openssl_error(), next);
  }

  void fail(const std::string& why, const Next& next) {
    ++shared_.failures;
    shared_.last_error = why;
    close();
    next(false);
  }

  Shared& shared_;
  tcp::socket sock_;
  SSL* ssl_ = nullptr;
};

using ConnPtr = std::shared_ptr<Conn>;

const unsigned char kEchoRequest[102] = {0, 100};  // then 100 zero bytes
const unsigned char kPing[3] = {0, 1, 'p'};

std::uint64_t percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k =
      std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

/// Stops everything after the run's time limit, whatever happens.
void guard(Shared& s, asio::steady_timer& t, double seconds) {
  t.expires_after(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  t.async_wait([&s](std::error_code ec) {
    if (ec) return;
    std::fprintf(stderr, "loadgen: time limit reached\n");
    s.io.stop();
  });
}

// ------------------------------------------------------------------ bulk

int bulk(Shared& s, std::uint64_t bytes, bool upload, double limit) {
  auto c = std::make_shared<Conn>(s);
  bool ok = false;
  Clock::time_point t0;
  double elapsed = 0;
  static unsigned char request[kRequestSize];
  put_request(request, upload ? 'U' : 'D', bytes);
  std::uint64_t left = bytes;
  std::function<void(bool)> send_more;
  auto done = [&](bool good) {
    elapsed = since(t0);
    mark("end");
    ok = good;
    c->close();
    s.io.stop();
  };
  send_more = [&](bool good) {
    if (!good) return done(false);
    if (left == 0) return c->read(1, done);
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
    left -= n;
    c->write(g_zeros, n, send_more);
  };
  c->connect(nullptr, [&](bool good) {
    if (!good) return s.io.stop();
    mark("start");
    t0 = Clock::now();
    c->write(request, kRequestSize, [&](bool good2) {
      if (!good2) return done(false);
      if (upload) return send_more(true);
      c->read(bytes, done);
    });
  });
  asio::steady_timer timer(s.io);
  guard(s, timer, limit);
  s.io.run();
  if (!ok) {
    std::fprintf(stderr, "loadgen: %s failed: %s\n", upload ? "upload" : "bulk",
                 s.last_error.c_str());
    return 1;
  }
  std::printf("RESULT bytes=%llu seconds=%.6f mb_s=%.2f\n", static_cast<unsigned long long>(bytes),
              elapsed, static_cast<double>(bytes) / elapsed / 1e6);
  return 0;
}

// ------------------------------------------------------------------ echo

struct EchoRun {
  explicit EchoRun(Shared& shared) : s(shared) {}
  Shared& s;
  bool measuring = false, stopping = false;
  std::uint64_t count = 0;
  std::vector<std::uint32_t> latencies;
  std::vector<ConnPtr> conns;

  void round(const ConnPtr& c) {
    if (stopping) return;
    auto t0 = Clock::now();
    bool counted = measuring;
    c->write(kEchoRequest, sizeof kEchoRequest, [this, c, t0, counted](bool ok) {
      if (!ok) return;
      c->read(sizeof kEchoRequest, [this, c, t0, counted](bool ok2) {
        if (!ok2) return;
        if (measuring) {
          ++count;
          if (counted)
            latencies.push_back(static_cast<std::uint32_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
        }
        round(c);
      });
    });
  }
};

int echo(Shared& s, int n, double warmup, double seconds, double limit) {
  EchoRun run(s);
  run.latencies.reserve(1 << 20);
  int connected = 0, answered = 0;
  asio::steady_timer phase(s.io), timer(s.io);
  Clock::time_point t0;
  double elapsed = 0;
  guard(s, timer, limit);
  for (int i = 0; i < n; ++i) {
    auto c = std::make_shared<Conn>(s);
    run.conns.push_back(c);
    c->connect(nullptr, [&, c](bool ok) {
      ++answered;
      if (ok) ++connected;
      if (answered < n) return;
      if (connected < n) {
        s.io.stop();
        return;
      }
      for (auto& conn : run.conns) run.round(conn);
      phase.expires_after(
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup)));
      phase.async_wait([&](std::error_code) {
        mark("start");
        t0 = Clock::now();
        run.measuring = true;
        phase.expires_after(
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
        phase.async_wait([&](std::error_code) {
          run.measuring = false;
          elapsed = since(t0);
          mark("end");
          run.stopping = true;
          for (auto& conn : run.conns) conn->close();
          s.io.stop();
        });
      });
    });
  }
  s.io.run();
  if (connected < n || elapsed == 0) {
    std::fprintf(stderr, "loadgen: echo: %d of %d connections made, last error: %s\n", connected, n,
                 s.last_error.c_str());
    return 1;
  }
  std::uint64_t p50 = percentile(run.latencies, 0.50), p99 = percentile(run.latencies, 0.99);
  std::printf(
      "RESULT roundtrips=%llu seconds=%.6f rt_s=%.1f p50_us=%llu p99_us=%llu failures=%llu\n",
      static_cast<unsigned long long>(run.count), elapsed, static_cast<double>(run.count) / elapsed,
      static_cast<unsigned long long>(p50), static_cast<unsigned long long>(p99),
      static_cast<unsigned long long>(s.failures));
  return 0;
}

// ------------------------------------------------------------------ handshakes

struct HandshakeRun {
  explicit HandshakeRun(Shared& shared) : s(shared) {}
  Shared& s;
  bool resume = false, measuring = false, stopping = false;
  std::uint64_t count = 0, reused = 0, consecutive_failures = 0;

  void loop(SSL_SESSION* session) {
    if (stopping) {
      if (session != nullptr) SSL_SESSION_free(session);
      return;
    }
    auto c = std::make_shared<Conn>(s);
    c->connect(session, [this, c, session](bool ok) {
      if (session != nullptr) SSL_SESSION_free(session);
      if (!ok) return failed();
      c->write(kPing, sizeof kPing, [this, c](bool ok2) {
        if (!ok2) return failed();
        c->read(sizeof kPing, [this, c](bool ok3) {
          if (!ok3) return failed();
          consecutive_failures = 0;
          if (measuring) {
            ++count;
            if (c->reused()) ++reused;
          }
          SSL_SESSION* next = resume ? c->session() : nullptr;
          c->close();
          // Through the loop, so that the stack unwinds between connections.
          asio::post(s.io, [this, next] { loop(next); });
        });
      });
    });
  }

  void failed() {
    if (++consecutive_failures > 1000) {
      std::fprintf(stderr, "loadgen: handshakes keep failing: %s\n", s.last_error.c_str());
      s.io.stop();
      return;
    }
    asio::post(s.io, [this] { loop(nullptr); });
  }
};

int handshakes(Shared& s, int workers, bool resume, double warmup, double seconds, double limit) {
  HandshakeRun run(s);
  run.resume = resume;
  asio::steady_timer phase(s.io), timer(s.io);
  guard(s, timer, limit);
  Clock::time_point t0;
  double elapsed = 0;
  for (int i = 0; i < workers; ++i) run.loop(nullptr);
  phase.expires_after(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup)));
  phase.async_wait([&](std::error_code) {
    mark("start");
    t0 = Clock::now();
    run.measuring = true;
    phase.expires_after(
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
    phase.async_wait([&](std::error_code) {
      run.measuring = false;
      elapsed = since(t0);
      mark("end");
      run.stopping = true;
      s.io.stop();
    });
  });
  s.io.run();
  if (elapsed == 0 || run.count == 0) {
    std::fprintf(stderr, "loadgen: handshakes: none completed, last error: %s\n",
                 s.last_error.c_str());
    return 1;
  }
  std::printf("RESULT handshakes=%llu seconds=%.6f hs_s=%.1f resumed=%llu failures=%llu\n",
              static_cast<unsigned long long>(run.count), elapsed,
              static_cast<double>(run.count) / elapsed, static_cast<unsigned long long>(run.reused),
              static_cast<unsigned long long>(s.failures));
  return 0;
}

// ------------------------------------------------------------------ idle

int idle(Shared& s, int total, int pace, double limit) {
  std::vector<ConnPtr> open;
  open.reserve(static_cast<std::size_t>(total));
  int started = 0, finished = 0;
  bool timed_out = false;
  auto t0 = Clock::now();
  std::function<void()> launch = [&] {
    while (started < total && started - finished < pace) {
      ++started;
      auto c = std::make_shared<Conn>(s);
      c->connect(nullptr, [&, c](bool ok) {
        auto done = [&, c](bool good) {
          ++finished;
          if (good) open.push_back(c);
          if (finished == total)
            s.io.stop();
          else
            launch();
        };
        if (!ok) return done(false);
        c->write(kPing, sizeof kPing, [c, done](bool ok2) {
          if (!ok2) return done(false);
          c->read(sizeof kPing, done);
        });
      });
    }
  };
  asio::steady_timer timer(s.io);
  timer.expires_after(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limit)));
  timer.async_wait([&](std::error_code ec) {
    if (ec) return;
    timed_out = true;
    s.io.stop();
  });
  launch();
  s.io.run();
  std::printf("OPEN open=%zu failed=%llu seconds=%.3f%s\n", open.size(),
              static_cast<unsigned long long>(s.failures), since(t0),
              timed_out ? " timed_out=1" : "");
  if (s.failures > 0 || timed_out)
    std::fprintf(stderr, "loadgen: idle: %zu of %d open; last error: %s\n", open.size(), total,
                 s.last_error.c_str());
  std::fflush(stdout);
  std::string line;
  std::getline(std::cin, line);
  for (auto& c : open) c->close();
  open.clear();
  std::printf("CLOSED\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int run_client(const std::string& mode, const Flags& f) {
  raise_fd_limit();
  Shared s;
  s.server = tcp::endpoint(asio::ip::make_address(f.str("host", "127.0.0.1")),
                           static_cast<unsigned short>(f.num("port", 0)));
  double limit = f.num("limit", 300);
  double warmup = f.num("warmup", 1), seconds = f.num("seconds", 5);
  int conns = static_cast<int>(f.num("conns", 16));
  auto bytes = static_cast<std::uint64_t>(f.num("bytes", 256e6));
  if (mode == "bulk") return bulk(s, bytes, false, limit);
  if (mode == "upload") return bulk(s, bytes, true, limit);
  if (mode == "echo") return echo(s, conns, warmup, seconds, limit);
  if (mode == "handshake") return handshakes(s, conns, false, warmup, seconds, limit);
  if (mode == "resume") return handshakes(s, conns, true, warmup, seconds, limit);
  if (mode == "idle") return idle(s, conns, static_cast<int>(f.num("pace", 32)), limit);
  die("unknown mode " + mode);
}

}  // namespace bench
