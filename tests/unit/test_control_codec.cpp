// Control-channel codecs: binary frames (JSON and ETF terms, DATA) and lines,
// fed in every split; bad frames; caps; the worked examples of
// docs/protocol.md §6 byte for byte.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "protocol/control_codec.hpp"
#include "protocol/etf.hpp"

using namespace tlsport::protocol;
using nlohmann::json;

namespace {

/// Bytes from a list of small integers.
std::string bytes(std::initializer_list<int> list) {
  std::string out;
  for (int b : list) out.push_back(static_cast<char>(b));
  return out;
}

/// A json binary value.
json bin(std::string_view s) { return json::binary(std::vector<std::uint8_t>(s.begin(), s.end())); }

/// A {packet,N} frame around `body`.
std::string frame(unsigned n, const std::string& body) {
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(static_cast<char>((body.size() >> (8 * (n - 1 - i))) & 0xFF));
  }
  return out + body;
}

/// A CONTROL frame body for a term.
std::string control(const std::string& term) { return std::string(1, '\0') + term; }

/// A DATA frame body.
std::string data_body(std::uint32_t id, const std::string& data) {
  return bytes({1, int(id >> 24), int((id >> 16) & 0xFF), int((id >> 8) & 0xFF), int(id & 0xFF)}) +
         data;
}

/// Everything a decoder reported, as comparable text.
struct Recorder {
  std::vector<std::string> events;  ///< "cmd <json>", "data <id> <bytes>", "bad <code> <detail>"
  std::vector<InboundMessage> messages;  ///< commands as received (data views cleared)
  bool stop_each = false;                ///< return false from on_message

  std::error_code feed(ControlDecoder& d, std::string_view in) {
    return d.feed(
        in,
        [this](InboundMessage& m) {
          if (m.kind == InboundMessage::Kind::command) {
            events.push_back("cmd " +
                             m.command.dump(-1, ' ', false, json::error_handler_t::replace));
          } else {
            events.push_back("data " + std::to_string(m.socket_id) + " " + std::string(m.data));
          }
          messages.push_back(m);
          messages.back().data = {};
          return !stop_each;
        },
        [this](ControlError e, const std::string& detail) {
          EXPECT_FALSE(detail.empty());
          events.push_back("bad " + std::to_string(static_cast<int>(e)));
        });
  }
};

/// term_to_binary(#{op => hello, ref => 1}) on OTP 25 (docs/protocol.md §6.3).
const std::string kEtfHello =
    bytes({0x83, 0x74, 0x00, 0x00, 0x00, 0x02, 0x64, 0x00, 0x02, 0x6f, 0x70, 0x64, 0x00, 0x05,
           0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x64, 0x00, 0x03, 0x72, 0x65, 0x66, 0x61, 0x01});

/// term_to_binary(#{op => deliver, id => 5, data => <<0,1,255>>})
const std::string kEtfDeliver =
    bytes({131, 116, 0,   0,   0, 3,   100, 0,   4,   100, 97,  116, 97, 109, 0,
           0,   0,   3,   0,   1, 255, 100, 0,   2,   105, 100, 97,  5,  100, 0,
           2,   111, 112, 100, 0, 7,   100, 101, 108, 105, 118, 101, 114});

/// term_to_binary(#{op => deliver, id => 5, data => "hi"}): data as a byte list.
const std::string kEtfDeliverString = bytes(
    {131, 116, 0,   0,  0, 3,   100, 0, 4,   100, 97,  116, 97, 107, 0,   2,   104, 105, 100, 0,
     2,   105, 100, 97, 5, 100, 0,   2, 111, 112, 100, 0,   7,  100, 101, 108, 105, 118, 101, 114});

/// term_to_binary(#{op => deliver, id => 5, text => <<"hi">>})
const std::string kEtfText =
    bytes({131, 116, 0,   0,   0,   3,   100, 0,   2,   105, 100, 97,  5,   100,
           0,   2,   111, 112, 100, 0,   7,   100, 101, 108, 105, 118, 101, 114,
           100, 0,   4,   116, 101, 120, 116, 109, 0,   0,   0,   2,   104, 105});

/// term_to_binary(#{op => listen, tls => #{certfile => <<"/c.pem">>, verify => 0},
///   mode => <<"packet:2">>})
const std::string kEtfListen =
    bytes({131, 116, 0,   0,   0,   3,   100, 0,   4,   109, 111, 100, 101, 109, 0,   0, 0,
           8,   112, 97,  99,  107, 101, 116, 58,  50,  100, 0,   2,   111, 112, 100, 0, 6,
           108, 105, 115, 116, 101, 110, 100, 0,   3,   116, 108, 115, 116, 0,   0,   0, 2,
           100, 0,   8,   99,  101, 114, 116, 102, 105, 108, 101, 109, 0,   0,   0,   6, 47,
           99,  46,  112, 101, 109, 100, 0,   6,   118, 101, 114, 105, 102, 121, 97,  0});

/// A binary stream mixing every kind of frame, good and bad.
std::string binary_stream(unsigned n) {
  std::string s;
  s += frame(n, control(R"({"op":"hello","ref":1})"));
  s += frame(n, control(kEtfHello));
  s += frame(n, data_body(5, "hi"));
  s += frame(n, control(" \n{\"op\":\"deliver\",\"id\":7,\"data\":\"aGVsbG8=\",\"ref\":\"r\"}"));
  s += frame(n, control(R"({"op":"deliver","id":8,"text":"GET / HTTP/1.0\r\n\r\n"})"));
  s += frame(n, control(kEtfDeliver));
  s += frame(n, data_body(0xFFFFFFFE, ""));
  s += frame(n, "");                                           // empty_frame
  s += frame(n, bytes({7, 1, 2}));                             // bad_frame_type
  s += frame(n, bytes({1, 0, 0, 5}));                          // short_data_frame
  s += frame(n, control(bytes({131, 88})));                    // bad_term
  s += frame(n, control("{\"op\":"));                          // bad_json
  s += frame(n, control("[1,2]"));                             // not_an_object
  s += frame(n, control(bytes({131, 106})));                   // not_an_object (ETF [])
  s += frame(n, control(R"({"op":"deliver","data":"a$b"})"));  // not base64: left for the command
  s += frame(n, data_body(9, std::string("\0\r\n\xff", 4)));
  return s;
}

const std::vector<std::string> kBinaryEvents = {
    R"(cmd {"op":"hello","ref":1})",
    R"(cmd {"op":"hello","ref":1})",
    "data 5 hi",
    R"(cmd {"data":{"bytes":[104,101,108,108,111],"subtype":null},"id":7,"op":"deliver","ref":"r"})",
    R"(cmd {"data":{"bytes":[71,69,84,32,47,32,72,84,84,80,47,49,46,48,13,10,13,10],"subtype":null},"id":8,"op":"deliver"})",
    R"(cmd {"data":{"bytes":[0,1,255],"subtype":null},"id":5,"op":"deliver"})",
    "data 4294967294 ",
    "bad 2",
    "bad 3",
    "bad 4",
    "bad 5",
    "bad 6",
    "bad 7",
    "bad 7",
    R"(cmd {"data":"a$b","op":"deliver"})",
    std::string("data 9 \0\r\n\xff", 11),
};

/// A lines stream with blank lines, CRLF, and bad lines.
const std::string kLinesStream =
    "{\"op\":\"hello\",\"ref\":1,\"name\":\"sh\"}\n"
    "\n"
    "   \t\r\n"
    "{\"op\":\"deliver\",\"id\":1,\"text\":\"GET / HTTP/1.0\\r\\n\\r\\n\"}\r\n"
    "\r\n"
    "{oops}\n"
    "[1,2]\n"
    "{\"op\":\"deliver\",\"id\":2,\"data\":\"!!!!\"}\n"
    "  {\"op\":\"deliver\",\"id\":2,\"data\":\"aGVsbG8\"}  \n"
    "{\"op\":\"close\",\"ref\":5,\"id\":2}\n";

const std::vector<std::string> kLinesEvents = {
    R"(cmd {"name":"sh","op":"hello","ref":1})",
    R"(cmd {"data":{"bytes":[71,69,84,32,47,32,72,84,84,80,47,49,46,48,13,10,13,10],"subtype":null},"id":1,"op":"deliver"})",
    "bad 6",
    "bad 7",
    R"(cmd {"data":"!!!!","id":2,"op":"deliver"})",
    R"(cmd {"data":{"bytes":[104,101,108,108,111],"subtype":null},"id":2,"op":"deliver"})",
    R"(cmd {"id":2,"op":"close","ref":5})",
};

/// Feeds `stream` in several ways; each must report `expected`.
void check_all_splits(ControlEncoding encoding, unsigned n, const std::string& stream,
                      const std::vector<std::string>& expected) {
  constexpr std::size_t kMax = 1 << 20;
  {  // whole
    ControlDecoder d(encoding, n, kMax);
    Recorder r;
    ASSERT_FALSE(r.feed(d, stream));
    ASSERT_EQ(r.events, expected);
    EXPECT_EQ(d.buffered(), 0u);
  }
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {  // two pieces, cut anywhere
    ControlDecoder d(encoding, n, kMax);
    Recorder r;
    ASSERT_FALSE(r.feed(d, std::string_view(stream).substr(0, cut)));
    ASSERT_FALSE(r.feed(d, std::string_view(stream).substr(cut)));
    ASSERT_EQ(r.events, expected) << "cut at " << cut;
    EXPECT_EQ(d.buffered(), 0u);
  }
  {  // one byte at a time
    ControlDecoder d(encoding, n, kMax);
    Recorder r;
    for (char c : stream) ASSERT_FALSE(r.feed(d, std::string_view(&c, 1)));
    ASSERT_EQ(r.events, expected);
  }
  {  // random chunks, each fed from its own short-lived buffer (views must not outlive it)
    std::mt19937 rng(3);
    for (int round = 0; round < 50; ++round) {
      ControlDecoder d(encoding, n, kMax);
      Recorder r;
      for (std::size_t at = 0; at < stream.size();) {
        const std::size_t len = std::min<std::size_t>(1 + rng() % 40, stream.size() - at);
        std::string chunk = stream.substr(at, len);
        ASSERT_FALSE(r.feed(d, chunk));
        chunk.assign(chunk.size(), '#');
        at += len;
      }
      ASSERT_EQ(r.events, expected) << "round " << round;
    }
  }
  {  // stopping after every message, resuming with empty feeds
    ControlDecoder d(encoding, n, kMax);
    Recorder r;
    r.stop_each = true;
    ASSERT_FALSE(r.feed(d, stream));
    for (std::size_t guard = 0; guard < expected.size() + 2; ++guard) {
      const std::size_t before = r.events.size();
      ASSERT_FALSE(r.feed(d, ""));
      if (r.events.size() == before) break;
    }
    ASSERT_EQ(r.events, expected);
    EXPECT_EQ(d.buffered(), 0u);
  }
}

}  // namespace

TEST(ControlDecoder, BinaryStreamEverySplitPacket4) {
  check_all_splits(ControlEncoding::binary, 4, binary_stream(4), kBinaryEvents);
}

TEST(ControlDecoder, BinaryStreamEverySplitPacket2) {
  check_all_splits(ControlEncoding::binary, 2, binary_stream(2), kBinaryEvents);
}

TEST(ControlDecoder, BinaryStreamEverySplitPacket1) {
  check_all_splits(ControlEncoding::binary, 1, binary_stream(1), kBinaryEvents);
}

TEST(ControlDecoder, LinesStreamEverySplit) {
  check_all_splits(ControlEncoding::lines, 0, kLinesStream, kLinesEvents);
}

TEST(ControlDecoder, DocExamplesDecode) {
  // §6.2: hello, then deliver "hi" to socket 5.
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  Recorder r;
  ASSERT_FALSE(r.feed(
      d, bytes({0x00, 0x00, 0x00, 0x17, 0x00, 0x7b, 0x22, 0x6f, 0x70, 0x22, 0x3a, 0x22, 0x68, 0x65,
                0x6c, 0x6c, 0x6f, 0x22, 0x2c, 0x22, 0x72, 0x65, 0x66, 0x22, 0x3a, 0x31, 0x7d})));
  ASSERT_FALSE(
      r.feed(d, bytes({0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0x05, 0x68, 0x69})));
  // §6.3: the ETF hello, framed as 00 00 00 1c 00 83 74 …
  ASSERT_FALSE(r.feed(d, bytes({0x00, 0x00, 0x00, 0x1c, 0x00}) + kEtfHello));
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].command, json({{"op", "hello"}, {"ref", 1}}));
  EXPECT_EQ(r.messages[1].kind, InboundMessage::Kind::data);
  EXPECT_EQ(r.messages[1].socket_id, 5u);
  EXPECT_EQ(r.events[1], "data 5 hi");
  EXPECT_EQ(r.messages[2].command, json({{"op", "hello"}, {"ref", 1}}));
  EXPECT_EQ(d.first_term_format(), TermFormat::json);
}

TEST(ControlDecoder, DataViewIsZeroCopy) {
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  const std::string in = frame(4, data_body(5, "payload"));
  const char* seen = nullptr;
  d.feed(
      in,
      [&](InboundMessage& m) {
        seen = m.data.data();
        return true;
      },
      [](ControlError, const std::string&) { ADD_FAILURE(); });
  EXPECT_EQ(seen, in.data() + 9);
}

TEST(ControlDecoder, FirstTermFormat) {
  {
    ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
    Recorder r;
    EXPECT_EQ(d.first_term_format(), std::nullopt);
    r.feed(d, frame(4, data_body(1, "x")));  // DATA frames do not choose
    EXPECT_EQ(d.first_term_format(), std::nullopt);
    r.feed(d, frame(4, control("garbage")));  // neither does garbage
    EXPECT_EQ(d.first_term_format(), std::nullopt);
    r.feed(d, frame(4, control(kEtfHello)));
    EXPECT_EQ(d.first_term_format(), TermFormat::etf);
    r.feed(d, frame(4, control(R"({"op":"hello"})")));
    EXPECT_EQ(d.first_term_format(), TermFormat::etf);  // the first one counts
    EXPECT_EQ(r.events.size(), 4u);
  }
  {
    ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
    Recorder r;
    r.feed(d, frame(4, control("\t {\"op\":")));  // a malformed JSON object still chooses
    EXPECT_EQ(d.first_term_format(), TermFormat::json);
  }
  {
    ControlDecoder d(ControlEncoding::lines, 0, 1 << 20);
    Recorder r;
    r.feed(d, "{\"op\":\"hello\"}\n");
    EXPECT_EQ(d.first_term_format(), std::nullopt);
  }
}

TEST(ControlDecoder, EtfStringsAndData) {
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  Recorder r;
  r.feed(d, frame(4, control(kEtfListen)) + frame(4, control(kEtfDeliver)) +
                frame(4, control(kEtfDeliverString)) + frame(4, control(kEtfText)));
  ASSERT_EQ(r.messages.size(), 4u);
  // Binaries are the model's strings, except "data", which is bytes.
  EXPECT_EQ(r.messages[0].command, json({{"op", "listen"},
                                         {"mode", "packet:2"},
                                         {"tls", {{"certfile", "/c.pem"}, {"verify", 0}}}}));
  EXPECT_TRUE(r.messages[0].command["mode"].is_string());
  EXPECT_EQ(r.messages[1].command,
            json({{"op", "deliver"}, {"id", 5}, {"data", bin(std::string("\0\1\xff", 3))}}));
  // In ETF a string is a byte list, not base64.
  EXPECT_EQ(r.messages[2].command, json({{"op", "deliver"}, {"id", 5}, {"data", bin("hi")}}));
  EXPECT_EQ(r.messages[3].command, json({{"op", "deliver"}, {"id", 5}, {"data", bin("hi")}}));
  // term_to_binary(#{op => deliver, id => 1, data => ""}): "" is [] (NIL_EXT) in Erlang.
  r.feed(d, frame(4, control(bytes({131, 116, 0,   0, 0, 3,   100, 0,   4,   'd', 'a', 't',
                                    'a', 106, 100, 0, 2, 'i', 'd', 97,  1,   100, 0,   2,
                                    'o', 'p', 100, 0, 7, 'd', 'e', 'l', 'i', 'v', 'e', 'r'}))));
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[4].command, json({{"op", "deliver"}, {"id", 1}, {"data", bin("")}}));
}

TEST(ControlDecoder, JsonDataAndText) {
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  Recorder r;
  r.feed(d, frame(4, control(R"({"op":"deliver","id":1,"data":"aGk=","text":"ignored"})")) +
                frame(4, control(R"({"op":"deliver","id":1,"data":"","text":"x"})")) +
                frame(4, control(R"({"op":"deliver","id":1,"text":"h\u00e9"})")) +
                frame(4, control(R"({"op":"deliver","id":1,"data":5})")) +
                frame(4, control(R"({"op":"deliver","id":1,"text":5})")));
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[0].command,
            json({{"op", "deliver"}, {"id", 1}, {"data", bin("hi")}, {"text", "ignored"}}));
  EXPECT_EQ(r.messages[1].command["data"], bin(""));
  EXPECT_EQ(r.messages[2].command,
            json({{"op", "deliver"}, {"id", 1}, {"data", bin("h\xc3\xa9")}}));
  // Wrong types are left for the command handler to reject.
  EXPECT_EQ(r.messages[3].command["data"], 5);
  EXPECT_EQ(r.messages[4].command["text"], 5);
  EXPECT_FALSE(r.messages[4].command.contains("data"));
}

TEST(ControlDecoder, BadFramesReportedAndSkipped) {
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  std::vector<std::pair<ControlError, std::string>> bad;
  int good = 0;
  auto feed = [&](const std::string& in) {
    return d.feed(
        in, [&](InboundMessage&) { return ++good, true; },
        [&](ControlError e, const std::string& detail) { bad.emplace_back(e, detail); });
  };
  const std::string hello = frame(4, control(R"({"op":"hello"})"));
  EXPECT_FALSE(feed(frame(4, control("{\"op\":\"hello\"")) + hello));
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].first, ControlError::bad_json);
  EXPECT_NE(bad[0].second.find("parse error"), std::string::npos) << bad[0].second;
  EXPECT_EQ(good, 1);
  EXPECT_FALSE(feed(frame(4, control(bytes({131, 108, 0, 0, 0, 1, 97, 1, 97, 2}))) + hello));
  EXPECT_EQ(bad.back().first, ControlError::bad_term);
  EXPECT_NE(bad.back().second.find("improper"), std::string::npos);
  EXPECT_FALSE(feed(frame(4, control("")) + hello));
  EXPECT_EQ(bad.back().first, ControlError::bad_term);
  EXPECT_FALSE(feed(frame(4, bytes({0x42})) + hello));
  EXPECT_EQ(bad.back().first, ControlError::bad_frame_type);
  EXPECT_NE(bad.back().second.find("0x42"), std::string::npos);
  // Invalid UTF-8 in JSON is malformed JSON.
  EXPECT_FALSE(feed(frame(4, control("{\"op\":\"\xff\"}")) + hello));
  EXPECT_EQ(bad.back().first, ControlError::bad_json);
  EXPECT_EQ(good, 5);
  EXPECT_EQ(bad.size(), 5u);
}

TEST(ControlDecoder, JsonDepthCapped) {
  ControlDecoder d(ControlEncoding::lines, 0, 1 << 20);
  Recorder r;
  const std::string deep = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}\n";
  // Brackets inside strings do not count.
  const std::string flat = "{\"a\":\"" + std::string(100, '[') + "\\\"" + "\"}\n";
  const std::string ok = "{\"a\":" + std::string(31, '[') + std::string(31, ']') + "}\n";
  r.feed(d, deep + flat + ok);
  ASSERT_EQ(r.events.size(), 3u);
  EXPECT_EQ(r.events[0], "bad 6");
  EXPECT_EQ(r.messages.at(0).command["a"], std::string(100, '[') + "\"");
  EXPECT_TRUE(r.messages.at(1).command["a"].is_array());
}

TEST(ControlDecoder, OverCapHeaderIsFatal) {
  ControlDecoder d(ControlEncoding::binary, 4, 100);
  Recorder r;
  const std::string fits = frame(4, control("{\"s\":\"" + std::string(100 - 9, 'x') + "\"}"));
  ASSERT_EQ(fits.size(), 104u);
  EXPECT_FALSE(r.feed(d, fits));
  ASSERT_EQ(r.events.size(), 1u);
  // A frame before the bad header is still delivered.
  const std::error_code ec =
      r.feed(d, frame(4, data_body(1, "a")) + bytes({0, 0, 0, 101}) + std::string(101, 'x'));
  EXPECT_EQ(ec, ControlError::frame_too_large);
  EXPECT_EQ(ec, make_error_code(ControlError::frame_too_large));
  EXPECT_TRUE(is_fatal(ControlError::frame_too_large));
  EXPECT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events.back(), "data 1 a");
  // Dead from now on.
  EXPECT_EQ(r.feed(d, frame(4, control("{}"))), ControlError::frame_too_large);
  EXPECT_EQ(r.events.size(), 2u);
  // The header alone is enough: nothing waits for the announced bytes.
  ControlDecoder d2(ControlEncoding::binary, 4, 64 << 20);
  EXPECT_EQ(r.feed(d2, bytes({0x7f, 0xff, 0xff, 0xff})), ControlError::frame_too_large);
}

TEST(ControlDecoder, OverlongLineIsFatal) {
  ControlDecoder d(ControlEncoding::lines, 0, 64);
  Recorder r;
  EXPECT_FALSE(r.feed(d, "{\"op\":\"hello\"}\n"));
  EXPECT_EQ(r.feed(d, "{\"s\":\"" + std::string(100, 'x')), ControlError::frame_too_large);
  EXPECT_EQ(r.events.size(), 1u);
}

TEST(ControlDecoder, RandomInputNeverCrashes) {
  // Random bytes and mutated streams: any mix of messages and errors, no crash.
  std::mt19937 rng(11);
  const std::string base = binary_stream(2);
  for (int round = 0; round < 3000; ++round) {
    std::string s = base;
    for (int e = 0; e < 4; ++e) s[rng() % s.size()] = static_cast<char>(rng() & 0xFF);
    ControlDecoder d(round % 2 ? ControlEncoding::binary : ControlEncoding::lines, 2, 4096);
    Recorder r;
    r.feed(d, s);
  }
}

TEST(ControlError, Category) {
  std::set<std::string> messages;
  for (int e = 1; e <= 8; ++e) {
    const std::error_code ec = make_error_code(static_cast<ControlError>(e));
    EXPECT_EQ(&ec.category(), &control_category());
    EXPECT_FALSE(ec.message().empty());
    messages.insert(ec.message());
    EXPECT_EQ(is_fatal(static_cast<ControlError>(e)), e == 1);
  }
  EXPECT_EQ(messages.size(), 8u);
  EXPECT_STREQ(control_category().name(), "tlsport.control");
}

// --- Encoder ---------------------------------------------------------------

TEST(ControlEncoder, DocExampleJsonBinary) {
  // §6.2: the hello frame and the DATA frames, byte for byte.
  ControlEncoder enc(ControlEncoding::binary, 4, TermFormat::json);
  std::string out;
  ASSERT_TRUE(enc.append_message(out, json({{"op", "hello"}, {"ref", 1}})));
  EXPECT_EQ(out, bytes({0x00, 0x00, 0x00, 0x17, 0x00, 0x7b, 0x22, 0x6f, 0x70,
                        0x22, 0x3a, 0x22, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x22,
                        0x2c, 0x22, 0x72, 0x65, 0x66, 0x22, 0x3a, 0x31, 0x7d}));
  out.clear();
  ASSERT_TRUE(enc.append_data(out, 5, "hi"));
  EXPECT_EQ(out, bytes({0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0x05, 0x68, 0x69}));
  out = "prev";
  ASSERT_TRUE(enc.append_data(out, 5, "ok"));
  EXPECT_EQ(out,
            "prev" + bytes({0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0x05, 0x6f, 0x6b}));
}

TEST(ControlEncoder, DocExampleEtfBinary) {
  // §6.3: framed as 00 00 00 1c 00 83 74 …; our atoms are SMALL_ATOM_UTF8_EXT
  // and strings binaries (the same 27 bytes, by coincidence of sizes).
  ControlEncoder enc(ControlEncoding::binary, 4, TermFormat::json);
  enc.set_term_format(TermFormat::etf);
  EXPECT_EQ(enc.term_format(), TermFormat::etf);
  std::string out;
  ASSERT_TRUE(enc.append_message(out, json({{"op", "hello"}, {"ref", 1}})));
  EXPECT_EQ(out, bytes({0x00, 0x00, 0x00, 0x1c, 0x00, 0x83, 0x74, 0,   0,    0,   2,
                        0x77, 2,    'o',  'p',  0x6d, 0,    0,    0,   5,    'h', 'e',
                        'l',  'l',  'o',  0x77, 3,    'r',  'e',  'f', 0x61, 1}));
  // And the decoder reads it back to the same command.
  ControlDecoder d(ControlEncoding::binary, 4, 1 << 20);
  Recorder r;
  r.feed(d, out);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].command, json({{"op", "hello"}, {"ref", 1}}));
}

TEST(ControlEncoder, DocExampleLines) {
  // §6.1, the daemon's lines byte for byte.
  ControlEncoder enc(ControlEncoding::lines, 0, TermFormat::json);
  std::string out;
  ASSERT_TRUE(enc.append_message(out, json({{"ref", 1},
                                            {"ok", true},
                                            {"version", "0.1.0"},
                                            {"protocol", 1},
                                            {"client", 1},
                                            {"name", "sh"},
                                            {"capabilities",
                                             {"lines", "binary", "etf", "json", "tls", "asn1",
                                              "line", "active", "recv", "unix"}}})));
  ASSERT_TRUE(enc.append_message(out, json({{"ref", 2},
                                            {"ok", true},
                                            {"id", 1},
                                            {"peer", {{"host", "127.0.0.1"}, {"port", 4433}}}})));
  ASSERT_TRUE(enc.append_message(
      out, json({{"event", "fromsocket"}, {"id", 1}, {"data", bin("HTTP/1.0 200 ok\r\n")}})));
  ASSERT_TRUE(
      enc.append_message(out, json({{"event", "socket_closed"}, {"id", 1}, {"reason", "normal"}})));
  EXPECT_EQ(out,
            "{\"capabilities\":[\"lines\",\"binary\",\"etf\",\"json\",\"tls\",\"asn1\",\"line\","
            "\"active\",\"recv\",\"unix\"],\"client\":1,\"name\":\"sh\",\"ok\":true,\"protocol\":1,"
            "\"ref\":1,\"version\":\"0.1.0\"}\n"
            "{\"id\":1,\"ok\":true,\"peer\":{\"host\":\"127.0.0.1\",\"port\":4433},\"ref\":2}\n"
            "{\"data\":\"SFRUUC8xLjAgMjAwIG9rDQo=\",\"event\":\"fromsocket\",\"id\":1}\n"
            "{\"event\":\"socket_closed\",\"id\":1,\"reason\":\"normal\"}\n");
  // append_data writes the same event by hand.
  out.clear();
  ASSERT_TRUE(enc.append_data(out, 1, "HTTP/1.0 200 ok\r\n"));
  EXPECT_EQ(out, "{\"event\":\"fromsocket\",\"id\":1,\"data\":\"SFRUUC8xLjAgMjAwIG9rDQo=\"}\n");
  EXPECT_EQ(
      json::parse(out),
      json::parse("{\"data\":\"SFRUUC8xLjAgMjAwIG9rDQo=\",\"event\":\"fromsocket\",\"id\":1}"));
  out.clear();
  ASSERT_TRUE(enc.append_data(out, 4294967295u, ""));
  EXPECT_EQ(out, "{\"event\":\"fromsocket\",\"id\":4294967295,\"data\":\"\"}\n");
}

TEST(ControlEncoder, BinariesBecomeBase64InJson) {
  ControlEncoder enc(ControlEncoding::binary, 2, TermFormat::json);
  std::string out;
  ASSERT_TRUE(enc.append_message(
      out, json({{"ok", true}, {"data", bin("hi")}, {"list", {bin("a"), {{"x", bin("")}}}}})));
  EXPECT_EQ(out.substr(2),
            std::string(1, '\0') + R"({"data":"aGk=","list":["YQ==",{"x":""}],"ok":true})");
  EXPECT_EQ(out.substr(0, 2), bytes({0, int(out.size() - 2)}));
}

TEST(ControlEncoder, InvalidUtf8NeverThrows) {
  ControlEncoder lines(ControlEncoding::lines, 0, TermFormat::json);
  std::string out;
  ASSERT_TRUE(lines.append_message(out, json({{"message", "bad \xff\xfe end"}})));
  EXPECT_EQ(out, "{\"message\":\"bad \xef\xbf\xbd\xef\xbf\xbd end\"}\n");
  ControlEncoder etf_enc(ControlEncoding::binary, 4, TermFormat::etf);
  out.clear();
  ASSERT_TRUE(etf_enc.append_message(out, json({{"message", "\xff"}})));
}

TEST(ControlEncoder, TooLargeForHeaderRefused) {
  ControlEncoder p1(ControlEncoding::binary, 1, TermFormat::json);
  // {"s":"…"} is 8 + n bytes; with the type byte the body is 9 + n <= 255.
  std::string out = "keep";
  ASSERT_TRUE(p1.append_message(out, json({{"s", std::string(246, 'x')}})));
  EXPECT_EQ(out.size(), 4u + 1 + 255);
  EXPECT_EQ(static_cast<std::uint8_t>(out[4]), 255);
  out = "keep";
  EXPECT_FALSE(p1.append_message(out, json({{"s", std::string(247, 'x')}})));
  EXPECT_EQ(out, "keep");
  ControlEncoder p1etf(ControlEncoding::binary, 1, TermFormat::etf);
  EXPECT_FALSE(p1etf.append_message(out, json({{"s", std::string(300, 'x')}})));
  EXPECT_EQ(out, "keep");

  // DATA: 255 - 5 and 65535 - 5 bytes at most.
  EXPECT_EQ(p1.max_data_per_frame(), 250u);
  ASSERT_TRUE(p1.append_data(out, 1, std::string(250, 'd')));
  EXPECT_EQ(out.size(), 4u + 1 + 255);
  EXPECT_EQ(static_cast<std::uint8_t>(out[4]), 255);
  out = "keep";
  EXPECT_FALSE(p1.append_data(out, 1, std::string(251, 'd')));
  EXPECT_EQ(out, "keep");

  ControlEncoder p2(ControlEncoding::binary, 2, TermFormat::json);
  EXPECT_EQ(p2.max_data_per_frame(), 65530u);
  ASSERT_TRUE(p2.append_data(out, 1, std::string(65530, 'd')));
  EXPECT_EQ(out.substr(4, 2), bytes({0xff, 0xff}));
  out = "keep";
  EXPECT_FALSE(p2.append_data(out, 1, std::string(65531, 'd')));
  EXPECT_EQ(out, "keep");

  ControlEncoder p4(ControlEncoding::binary, 4, TermFormat::json);
  EXPECT_EQ(p4.max_data_per_frame(), std::size_t{0xFFFFFFFF} - 5);
  ControlEncoder lines(ControlEncoding::lines, 0, TermFormat::json);
  EXPECT_EQ(lines.max_data_per_frame(), std::numeric_limits<std::size_t>::max());
}

TEST(ControlEncoder, RoundTripThroughDecoder) {
  const json messages[] = {
      json({{"ref", 3}, {"ok", true}, {"id", 4}, {"peer", {{"host", "::1"}, {"port", 1}}}}),
      json({{"event", "fromsocket"}, {"id", 9}, {"data", bin(std::string("\0\xff\n", 3))}}),
      json({{"ref", "r"},
            {"ok", false},
            {"error", {{"kind", "bad_request"}, {"message", "x"}}},
            {"list", {1, -2, 3.5, nullptr, false, json::array()}}}),
  };
  for (auto encoding : {ControlEncoding::binary, ControlEncoding::lines}) {
    for (auto format : {TermFormat::json, TermFormat::etf}) {
      if (encoding == ControlEncoding::lines && format == TermFormat::etf) continue;
      ControlEncoder enc(encoding, 2, format);
      std::string out;
      for (const auto& m : messages) ASSERT_TRUE(enc.append_message(out, m));
      ASSERT_TRUE(enc.append_data(out, 77, std::string("\0raw\n", 5)));
      ControlDecoder d(encoding, 2, 1 << 20);
      Recorder r;
      ASSERT_FALSE(r.feed(d, out));
      ASSERT_EQ(r.messages.size(), 4u);
      for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(r.messages[i].command, messages[i]);
      if (encoding == ControlEncoding::binary) {
        EXPECT_EQ(r.events[3], std::string("data 77 \0raw\n", 13));
      } else {
        EXPECT_EQ(
            r.messages[3].command,
            json({{"event", "fromsocket"}, {"id", 77}, {"data", bin(std::string("\0raw\n", 5))}}));
      }
    }
  }
}

TEST(ControlDecoder, JsonWithTooManyValuesIsRefused) {
  std::string body = "{\"op\":\"hello\",\"x\":[";
  for (int i = 0; i < 70000; ++i) body += "0,";
  body += "0]}";
  tlsport::protocol::ControlDecoder decoder(tlsport::protocol::ControlEncoding::lines, 4, 1 << 20);
  int messages = 0;
  std::string detail;
  auto ec = decoder.feed(
      body + "\n", [&](tlsport::protocol::InboundMessage&) { return ++messages, true; },
      [&](tlsport::protocol::ControlError, const std::string& d) { detail = d; });
  EXPECT_FALSE(ec);
  EXPECT_EQ(messages, 0);
  EXPECT_NE(detail.find("values"), std::string::npos) << detail;
}

namespace {
/// A primitive OCTET STRING around `contents` (definite length).
std::string octets(const std::string& contents) {
  std::string out(1, '\x04');
  if (contents.size() < 0x80) {
    out.push_back(static_cast<char>(contents.size()));
  } else {
    out += bytes({0x82, int(contents.size() >> 8), int(contents.size() & 0xFF)});
  }
  return out + contents;
}
}  // namespace

TEST(ControlAsn1, DefiniteIndefiniteAndSegmentedMessagesAtEverySplit) {
  std::string hello = control(R"({"op":"hello","ref":1})");
  std::string big = control(R"({"op":"hello","ref":")" + std::string(300, 'x') + R"("})");
  // Definite; long-form length; constructed and indefinite with two segments.
  std::string stream = octets(hello) + octets(big) + bytes({0x24, 0x80}) +
                       octets(hello.substr(0, 5)) + octets(hello.substr(5)) + bytes({0, 0}) +
                       octets(data_body(7, "abc"));
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    ControlDecoder d(ControlEncoding::asn1, 4, 1 << 20);
    Recorder r;
    ASSERT_FALSE(r.feed(d, std::string_view(stream).substr(0, split)));
    ASSERT_FALSE(r.feed(d, std::string_view(stream).substr(split)));
    ASSERT_EQ(r.events.size(), 4u) << split;
    EXPECT_EQ(r.events[0], r.events[2]) << split;  // segments join into the same message
    EXPECT_EQ(r.events[3], "data 7 abc");
  }
}

TEST(ControlAsn1, AnythingButAnOctetStringIsABadMessageAndTheChannelGoesOn) {
  ControlDecoder d(ControlEncoding::asn1, 4, 1 << 20);
  Recorder r;
  std::string sequence = bytes({0x30, 0x03, 0x02, 0x01, 0x05});  // SEQUENCE { INTEGER 5 }
  ASSERT_FALSE(r.feed(d, sequence + octets(control(R"({"op":"hello"})"))));
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0].rfind("bad ", 0), 0u) << r.events[0];
  EXPECT_EQ(r.events[1].rfind("cmd ", 0), 0u) << r.events[1];
  ControlDecoder capped(ControlEncoding::asn1, 4, 64);
  Recorder c;
  EXPECT_TRUE(c.feed(capped, bytes({0x04, 0x82, 0x10, 0x00})));  // 4 KiB announced, cap 64
}

TEST(ControlAsn1, TheEncoderWritesOctetStringsTheDecoderReads) {
  ControlEncoder e(ControlEncoding::asn1, 4, TermFormat::json);
  std::string out;
  ASSERT_TRUE(e.append_message(out, json{{"ok", true}, {"ref", 1}}));
  ASSERT_TRUE(e.append_data(out, 9, std::string(1000, 'z')));
  EXPECT_EQ(static_cast<unsigned char>(out[0]), 0x04);
  ControlDecoder d(ControlEncoding::asn1, 4, 1 << 20);
  Recorder r;
  ASSERT_FALSE(r.feed(d, out));
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[1], "data 9 " + std::string(1000, 'z'));
}
