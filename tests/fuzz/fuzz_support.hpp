// What every fuzz harness of tests/fuzz shares: checks that stay on in
// release builds, a reader for the control bytes at the front of an input,
// and a watch on the size of heap allocations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

/// Like assert(), but never compiled out: a failed check prints what broke and
/// aborts, which libFuzzer reports as a crash, keeping the input.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace tlsport::fuzz {

/// Takes control bytes (mode, cap, split point, ...) off the front of an
/// input; a byte past the end reads as 0, so every input is usable.
class InputReader {
 public:
  /// Reads from the libFuzzer input.
  InputReader(const std::uint8_t* data, std::size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  /// The next byte, or 0 when none is left.
  std::uint8_t byte() {
    if (rest_.empty()) return 0;
    const auto b = static_cast<std::uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }

  /// The next two bytes, big-endian.
  std::uint16_t u16() {
    const unsigned hi = byte();
    return static_cast<std::uint16_t>(hi << 8 | byte());
  }

  /// Whatever has not been taken.
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;  ///< bytes not taken yet
};

/// Records the largest heap allocation made while it is armed, through the
/// sanitizer allocator's hooks (present under ASan; without them, as in the
/// coverage build, it sees nothing and available() is false).
class AllocationWatch {
 public:
  /// Installs the hooks (once per process).
  static void install();
  /// True when allocations are seen at all.
  static bool available();
  /// Starts recording, forgetting the previous maximum.
  static void arm();
  /// Stops recording (allocations of the harness itself are not counted).
  static void pause();
  /// Starts recording again, keeping the maximum.
  static void resume();
  /// The largest allocation seen while armed since arm().
  static std::size_t largest();
};

namespace detail {
inline thread_local bool g_watching = false;    ///< recording allocations now
inline thread_local std::size_t g_largest = 0;  ///< largest one seen
inline bool g_installed = false;                ///< hooks in place
inline void on_malloc(const volatile void*, std::size_t size) {
  if (g_watching) g_largest = std::max(g_largest, size);
}
inline void on_free(const volatile void*) {}
}  // namespace detail

}  // namespace tlsport::fuzz

extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                             std::size_t),
                                                         void (*free_hook)(const volatile void*))
    __attribute__((weak));

namespace tlsport::fuzz {

inline void AllocationWatch::install() {
  if (detail::g_installed || __sanitizer_install_malloc_and_free_hooks == nullptr) return;
  detail::g_installed =
      __sanitizer_install_malloc_and_free_hooks(detail::on_malloc, detail::on_free) != 0;
}
inline bool AllocationWatch::available() { return detail::g_installed; }
inline void AllocationWatch::arm() {
  detail::g_largest = 0;
  detail::g_watching = true;
}
inline void AllocationWatch::pause() { detail::g_watching = false; }
inline void AllocationWatch::resume() { detail::g_watching = true; }
inline std::size_t AllocationWatch::largest() { return detail::g_largest; }

}  // namespace tlsport::fuzz
