// Client TLS sessions kept for resumption, by destination and settings:
// bounded, least recently used first out.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <list>
#include <string>
#include <unordered_map>

namespace tlsport::daemon {

/// The daemon's client sessions (TLS 1.2 sessions and TLS 1.3 tickets).
class SessionCache {
 public:
  explicit SessionCache(std::size_t capacity = 1024) : capacity_(capacity) {}
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;
  ~SessionCache() { clear(); }

  /// Keeps `session` under `key` (the cache owns the reference passed in),
  /// replacing an older one.
  void store(const std::string& key, SSL_SESSION* session);
  /// The session for `key` if it can still be resumed (borrowed: SSL_set_session
  /// takes its own reference), else null.
  SSL_SESSION* find(const std::string& key);
  /// Forgets every session.
  void clear();
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    SSL_SESSION* session;                   ///< owned reference
    std::list<std::string>::iterator used;  ///< place in `order_`
  };
  void erase(std::unordered_map<std::string, Entry>::iterator it);

  std::size_t capacity_;                            ///< sessions kept at most
  std::unordered_map<std::string, Entry> entries_;  ///< by destination and settings
  std::list<std::string> order_;                    ///< most recently used first
};

}  // namespace tlsport::daemon
