#include "daemon/socket_log.hpp"

#include <ctime>
#include <fstream>

namespace tlsport::daemon {

void SocketLog::write(std::uint32_t id, const std::string& line) const {
  std::ofstream out(path_, std::ios::app);
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  out << stamp << " socket " << id << ": " << line << "\n";
}

}  // namespace tlsport::daemon
