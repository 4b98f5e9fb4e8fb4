#include "daemon/stats_server.hpp"

#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include "daemon/log.hpp"
#include "daemon/options.hpp"
#include "daemon/shared.hpp"

namespace tlsport::daemon {

/// One request and its answer: read the head (at most 8 KiB, 5 s), write
/// the answer, close.
class StatsServer::Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(StatsServer& server, asio::ip::tcp::socket socket)
      : server_(server),
        count_(server.exchanges_),
        socket_(std::move(socket)),
        request_(8192),
        timer_(socket_.get_executor()) {}
  // Handlers still queued when the loop stops are destroyed with the
  // io_context, after the server: the count is shared, not the server's.
  ~Exchange() { --*count_; }

  void start() {
    timer_.expires_after(std::chrono::seconds(5));
    timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
      if (!ec) self->socket_.close();
    });
    asio::async_read_until(socket_, request_, "\r\n\r\n",
                           [self = shared_from_this()](const std::error_code& ec, std::size_t) {
                             if (!ec)
                               self->answer();
                             else
                               self->timer_.cancel();
                           });
  }

 private:
  void answer() {
    std::string head(asio::buffers_begin(request_.data()), asio::buffers_end(request_.data()));
    std::string status = "200 OK", body;
    if (head.rfind("GET /metrics ", 0) == 0 || head.rfind("GET /metrics?", 0) == 0)
      body = prometheus_text(stats_snapshot(server_.shared_));
    else
      status = "404 Not Found", body = "only GET /metrics is served here\n";
    reply_ = "HTTP/1.0 " + status +
             "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    asio::async_write(socket_, asio::buffer(reply_),
                      [self = shared_from_this()](const std::error_code&, std::size_t) {
                        std::error_code ignored;
                        self->socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
                        self->timer_.cancel();
                      });
  }

  StatsServer& server_;                 ///< has the stats (used only while the loop runs)
  std::shared_ptr<std::size_t> count_;  ///< the server's count of exchanges
  asio::ip::tcp::socket socket_;        ///< the HTTP client
  asio::streambuf request_;             ///< its request head (capped)
  asio::steady_timer timer_;            ///< the whole exchange's limit
  std::string reply_;                   ///< being written
};

StatsServer::StatsServer(Shared& shared) : shared_(shared), acceptor_(shared.io) {}

bool StatsServer::open(const std::string& where) {
  std::string host;
  std::uint16_t port = 0;
  std::error_code ec;
  if (!split_address_and_port(where, host, port))  // --check refuses it already
    ec = std::make_error_code(std::errc::invalid_argument);
  asio::ip::address address = ec ? asio::ip::address() : asio::ip::make_address(host, ec);
  asio::ip::tcp::endpoint endpoint(address, port);
  if (!ec) acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(16, ec);
  if (ec) {
    log(LogLevel::error, "cannot serve metrics on %s: %s", where.c_str(), ec.message().c_str());
    return false;
  }
  log(LogLevel::info, "metrics on http://%s/metrics", where.c_str());
  accept_next();
  return true;
}

void StatsServer::close() {
  std::error_code ignored;
  acceptor_.close(ignored);
}

void StatsServer::accept_next() {
  acceptor_.async_accept([this](const std::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec && *exchanges_ < kMaxExchanges) {
      ++*exchanges_;
      std::make_shared<Exchange>(*this, std::move(socket))->start();
    }
    accept_next();
  });
}

}  // namespace tlsport::daemon
