import Testing
@testable import SwitchboardCore

/// Seeded mutation fuzzing of every parser in the core: hostile bytes must produce a
/// clean error (or a value that re-encodes consistently), never a crash or a hang.
/// `FUZZ_ITERATIONS` (environment) sets the run length; CI uses the default.
@Suite struct FuzzTests {
    static var iterations: Int {
        if let text = getenvString("FUZZ_ITERATIONS"), let value = Int(text) { return value }
        return 20_000
    }

    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let interesting: [[UInt8]] = [
        Array("{}".utf8), Array("[]".utf8), Array("\"".utf8), Array("\\u0000".utf8), Array("\u{2028}".utf8),
        [0xFF, 0xFE], [0xC0, 0x80], [0xED, 0xA0, 0x80], Array("1e99999".utf8), Array(repeating: UInt8(ascii: "["), count: 300),
        Array("@".utf8), Array(",".utf8), Array("-".utf8), Array("18446744073709551616".utf8), [0x09], [0x0A],
    ]

    static func mutate(_ seed: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = seed
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !bytes.isEmpty:
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1 where !bytes.isEmpty:
                bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
            case 2:
                bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
            case 3:
                let chunk = interesting.randomElement(using: &rng)!
                bytes.insert(contentsOf: chunk, at: Int.random(in: 0...bytes.count, using: &rng))
            case 4 where !bytes.isEmpty:
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            default:
                bytes += (0..<Int.random(in: 0...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return bytes
    }

    @Test func clientEvents() {
        let seeds = [
            #"{"type":"say","room":"lobby","text":"hi","echo":true,"ref":1}"#,
            #"{"type":"whisper","to":"东东","text":"x","ref":"a"}"#, #"{"type":"join","room":"a:b.c"}"#, #"{"type":"ping"}"#,
        ].map { Array($0.utf8) }
        var rng = SplitMix64(state: 1)
        var accepted = 0
        for _ in 0..<Self.iterations {
            let input = Self.mutate(seeds.randomElement(using: &rng)!, &rng)
            switch ClientEvent.parse(input) {
            case .success(let event):
                accepted += 1
                // Whatever was accepted survives its own encoding.
                #expect((try? ClientEvent.parse(event.jsonBytes).get()) == event)
            case .failure(let error):
                #expect(!error.message.isEmpty)
            }
        }
        #expect(accepted > 0, "the fuzzer never produced a valid event: seeds are wrong")
    }

    @Test func cursorsAndIDs() {
        let seeds = ["r.lobby@1795294873349-0,u@12-3", "u@0-0", "r.a:b@1-1,r.c@2-2", ""].map { Array($0.utf8) }
        var rng = SplitMix64(state: 2)
        for _ in 0..<Self.iterations {
            let text = String(decoding: Self.mutate(seeds.randomElement(using: &rng)!, &rng), as: UTF8.self)
            if let cursor = Cursor(text) {
                #expect(Cursor(cursor.description) == cursor)
            }
            if let id = MessageID(text) {
                #expect(MessageID(id.description) == id)
            }
        }
    }

    @Test func tokens() {
        let signer = TokenSigner(secrets: ["fuzz"])
        let identity = Identity(nickname: Nickname("fuzzer")!, avatar: "1.jpg", session: "s", issuedAt: 1, expiresAt: .max)
        let token = signer.sign(identity)
        var rng = SplitMix64(state: 3)
        var forged = 0
        for _ in 0..<Self.iterations {
            let mutated = String(decoding: Self.mutate(Array(token.utf8), &rng), as: UTF8.self)
            // Base64's unused trailing bits let a few other strings carry the same bytes;
            // a forgery is any other identity that verifies.
            if let verified = signer.verify(mutated, now: 2), verified != identity { forged += 1 }
        }
        #expect(forged == 0, "\(forged) mutated tokens verified as another identity")
    }

    @Test func envelopesAndServerEvents() {
        let sender = Sender(nickname: Nickname("a")!, avatar: "1")
        let seeds = [
            Envelope(.message(id: nil, room: RoomName("lobby")!, from: sender, text: "hi", ts: 1), excludeNickname: Nickname("a")!).encoded,
            Envelope(.joined(room: RoomName("lobby")!, nickname: Nickname("b")!)).encoded,
            Envelope(.application(id: nil, target: .room(RoomName("x")!), fields: ["type": .string("t"), "n": .int(1)])).encoded,
        ]
        var rng = SplitMix64(state: 4)
        for _ in 0..<Self.iterations {
            let input = Self.mutate(seeds.randomElement(using: &rng)!, &rng)
            if let envelope = Envelope(encoded: input) {
                // Whatever decodes encodes again to something that decodes.
                #expect(Envelope(encoded: envelope.encoded) != nil)
                _ = envelope.event.with(id: MessageID(milliseconds: 1, sequence: 2)).jsonBytes
            }
            _ = ServerEvent.parse(input)
            _ = JSONValue.parse(input)
        }
    }
}

func getenvString(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

#if canImport(Glibc)
import Glibc
#endif
