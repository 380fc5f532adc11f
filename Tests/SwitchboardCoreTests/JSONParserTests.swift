import Foundation
import Testing
@testable import SwitchboardJSON

/// The hand-written parser against RFC 8259 and against Foundation's `JSONDecoder` (the
/// parser it replaced): the same values for valid documents, nil for invalid ones.
@Suite struct JSONParserTests {
    func parse(_ text: String) -> JSONValue? { JSONValue.parse(Array(text.utf8)) }

    func foundation(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    @Test(arguments: [
        #"{"type":"say","room":"lobby","text":"hi","ref":"a1"}"#,
        #"{"a":[1,-2,3.5,1e3,-0.25E-2,0,true,false,null],"b":{"c":{}},"d":[]}"#,
        #"  [ "x" , { "y" : "z" } ]  "#,
        #""\u00e9\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t""#,
        #"{"n":"小明","avatar":"😀","big":9223372036854775807,"neg":-9223372036854775808}"#,
        "42", "-0", "0.5", "true", "null", #""""#, "1.0", "3.0e0", "1.5e1", "-2.50", "1e-2", "9223372036854775808",
        #"{"dup":1,"dup":2}"#,
    ])
    func validDocumentsParseAsFoundationParsedThem(text: String) {
        let ours = parse(text)
        #expect(ours != nil)
        #expect(ours == foundation(text))
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "[,1]", #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", "[1 2]", #""abc"#, "\"tab\there\"", #""\x""#, #""\u12""#, #""\ud800""#, #""\udc00""#,
        #""\ud800\u0041""#, "1e999", "[1]x", "{}{}", #"{"a":1}]"#,
    ])
    func invalidDocumentsAreRefused(text: String) {
        #expect(parse(text) == nil)
    }

    @Test func invalidUTF8IsRefused() {
        #expect(JSONValue.parse([0x22, 0xC3, 0x28, 0x22]) == nil)
        #expect(JSONValue.parse([0x22, 0xFF, 0x22]) == nil)
    }

    @Test func integersBeyondInt64AreDoubles() {
        #expect(parse("9223372036854775808") == .double(9223372036854775808))
        #expect(parse("-12") == .int(-12))
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(parse(deep) == nil)
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(parse(fine)?.depth == 100)
    }

    @Test func roundTripsWhatTheWriterWrites() {
        var rng = SystemRandomNumberGenerator()
        func random(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 3 ? 5 : 7), using: &rng) {
            case 0: return .null
            case 1: return .bool(Bool.random(using: &rng))
            case 2: return .int(Int64.random(in: .min ... .max, using: &rng))
            // Integral doubles read back as `.int` (as Foundation's decoder did).
            case 3: return .double(Double(Int.random(in: -1_000_000...1_000_000, using: &rng)) + 0.25)
            case 4:
                let scalars = (0..<Int.random(in: 0..<12, using: &rng)).map { _ in
                    Unicode.Scalar(UInt32.random(in: 0...0x2FFF, using: &rng)).map(Character.init) ?? "x"
                }
                return .string(String(scalars))
            case 5: return .array((0..<Int.random(in: 0..<5, using: &rng)).map { _ in random(depth + 1) })
            default:
                var fields: [String: JSONValue] = [:]
                for i in 0..<Int.random(in: 0..<5, using: &rng) { fields["k\(i)\u{e9}"] = random(depth + 1) }
                return .object(fields)
            }
        }
        for _ in 0..<500 {
            let value = random(0)
            #expect(JSONValue.parse(value.jsonBytes) == value)
        }
    }
}
