#!/usr/bin/python3
"""make-corpus.py — writes the seed corpora of the fuzz/ harnesses.

    /usr/bin/python3 fuzz/make-corpus.py      (rewrites fuzz/corpus/*/seed-*)

The seeds are checked in; this script says how each was made, so that a
change of input layout in a harness can be followed here. Only the
standard library: hmac/hashlib/base64 sign the tokens with the harness's
key, and protobuf messages are encoded by hand (they are tiny).
Files are named seed-<name>; libFuzzer's own finds (sha1 names) and
regression inputs (regress-*) live beside them.
"""
import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"fuzz-signing-key-0123456789abcdef"  # fuzz_token.c KEY
KID = hashlib.sha256(KEY).digest()[:8].hex()
ISS, AUD = "https://authd.example", "authd-internal"
SUB, SID = "00112233445566778899aabbccddeeff", "0123456789abcdef0123456789abcdef"
T0 = 1700000000  # fuzz_token.c BASE_TIME; byte 1 = 0x80 puts the clock there


def write(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def b64(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(hdr, claims, key=KEY):
    signed = b64(hdr) + b"." + b64(claims)
    return signed + b"." + b64(hmac.new(key, signed, hashlib.sha256).digest())


HDR = '{"alg":"HS256","typ":"at+jwt","kid":"%s"}' % KID


def claims(iss=ISS, aud=AUD, sub=SUB, sid=SID, jti=SID, iat=T0, nbf=T0, exp=T0 + 900):
    # The exact layout authd_token_issue writes (the fast path's).
    return ('{"iss":"%s","aud":"%s","sub":"%s","sid":"%s","jti":"%s","iat":%s,"nbf":%s,"exp":%s}'
            % (iss, aud, sub, sid, jti, iat, nbf, exp))


def token_seeds():
    now = b"\x80"
    c = claims()
    raw = {
        "raw-valid": token(HDR, c),
        "raw-other-key": token(HDR, c, b"another-signing-key-abcdefghijkl"),
        "raw-alg-none": b64('{"alg":"none"}') + b"." + b64(c) + b".",
        "raw-no-sig": b64(HDR) + b"." + b64(c) + b".",
        "raw-two-parts": b64(HDR) + b"." + b64(c),
        "raw-padded": token(HDR, c) + b"==",
        "raw-expired": token(HDR, claims(exp=T0 - 3000)),
        "raw-not-yet": token(HDR, claims(nbf=T0 + 3000)),
    }
    for name, t in raw.items():
        write("fuzz_token", name, b"\x00" + now + t)
    body = {
        "claims-fast": c,
        "claims-reordered": json.dumps(json.loads(c), separators=(",", ":"), sort_keys=True),
        "claims-spaced": json.dumps(json.loads(c)),
        "claims-extra": c[:-1] + ',"scope":"x"}',
        "claims-escaped-iss": c.replace("https://", "https:\\/\\/"),
        "claims-sid-ne-jti": claims(jti="f" * 32),
        "claims-upper-hex": claims(sub=SUB.upper()),
        "claims-float-exp": claims(exp="1700000900.0"),
        "claims-neg-iat": claims(iat="-1"),
        "claims-huge-exp": claims(exp="99999999999999"),
        "claims-leading-zero": claims(nbf="01700000000"),
        "claims-2pow40": claims(exp=str(1 << 40)),
        "claims-missing-exp": c.split(',"exp"')[0] + "}",
        "claims-dup-sub": c[:-1] + ',"sub":"%s"}' % ("a" * 32),
        "claims-wrong-aud": claims(aud="other"),
        "claims-array": "[1,2,3]",
    }
    for name, b in body.items():
        write("fuzz_token", name, b"\x01" + now + b.encode())
    hdrs = {
        "hdr-ours": HDR,
        "hdr-reordered": '{"kid":"%s","typ":"at+jwt","alg":"HS256"}' % KID,
        "hdr-spaced": '{ "alg" : "HS256" , "typ" : "at+jwt" , "kid" : "%s" }' % KID,
        "hdr-escaped": '{"alg":"HS\\u0032\\u0035\\u0036","typ":"at+jwt","kid":"%s"}' % KID,
        "hdr-none": '{"alg":"none","typ":"at+jwt","kid":"%s"}' % KID,
        "hdr-extra": HDR[:-1] + ',"jku":"x"}',
        "hdr-dup": HDR[:-1] + ',"alg":"none"}',
        "hdr-nested": '{"alg":{"a":1},"typ":"at+jwt","kid":"%s"}' % KID,
    }
    for name, h in hdrs.items():
        hb = h.encode()
        write("fuzz_token", name, b"\x02" + now + bytes([len(hb)]) + hb + c.encode())
    for i, (iat, nbf, exp) in enumerate([(0, 0, 900), (0x100, 0, 0x100), (0, 0x1ff, 0x1ff)]):
        ids = bytes(range(i, i + 32))
        times = b"".join(v.to_bytes(5, "big") for v in (iat, nbf, exp))
        write("fuzz_token", "issue-%d" % i, b"\x03" + now + ids + times)


def validate_seeds():
    seeds = {
        "user-ok": "Alice_01", "user-short": "ab", "user-max": "a" * 32, "user-long": "a" * 33,
        "user-space": "al ice", "user-dots": "a.b-c_d", "user-utf8": "Jos\u00e9",
        "email-ok": "Alice@Example.COM", "email-plus": "a+tag@mail.example.org",
        "email-two-at": "a@b@c.example", "email-dotdot": "a..b@example.com",
        "email-no-tld": "a@localhost", "email-digit-tld": "a@example.123",
        "email-hyphen": "a@-bad.example", "email-atext": "!#$%&'*+/=?^_`{|}~@x.example",
        "email-long-label": "a@" + "b" * 64 + ".example",
        "email-max": "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".cc",
        "pw-ok": "a perfectly fine passphrase", "pw-common": "password1234",
        "pw-common-case": "PassWord1234", "pw-11": "abcdefghijk", "pw-128": "x" * 128,
        "pw-129": "x" * 129, "pw-emoji": "\U0001f600" * 12, "pw-accents": "\u00e9" * 12,
    }
    for name, s in seeds.items():
        write("fuzz_validate", name, s)
    raw = {
        "utf8-overlong": b"\xc0\xaf" * 8, "utf8-surrogate": b"\xed\xa0\x80" * 5,
        "utf8-max": b"\xf4\x8f\xbf\xbf" * 3, "utf8-above-max": b"\xf4\x90\x80\x80" * 3,
        "utf8-truncated": b"abcdefghijkl\xe2\x82", "utf8-nul": b"alice\x00x",
        "utf8-e0-low": b"\xe0\x9f\xbf" * 4, "utf8-f0-low": b"\xf0\x8f\xbf\xbf" * 3,
        "utf8-ascii-then-high": b"abcdefgh\xc3\xa9abcdefgh",
    }
    for name, b in raw.items():
        write("fuzz_validate", name, b)


def log_seeds():
    def seed(key, val):
        return bytes([len(key)]) + key + val
    seeds = {
        "plain": seed(b"peer", b"127.0.0.1:4242"),
        "quote-backslash": seed(b"k", b'a"b\\c'),
        "controls": seed(b"k", bytes(range(0, 32)) + b"\x7f"),
        "newline-forge": seed(b"k", b'x"}\n{"level":"error","event":"forged'),
        "utf8": seed(b"k", "caf\u00e9 \u20ac \U0001f600".encode()),
        "invalid-utf8": seed(b"k", b"\xff\xfe\xc3\x28\xe2\x82\xf0\x9f\x98"),
        "overlong-surrogate": seed(b"k", b"\xc0\xaf\xed\xa0\x80"),
        "nul": seed(b"k", b"a\x00b"),
        "u2028": seed(b"k", "\u2028\u2029".encode()),
        "key-escapes": seed(b'k"\n\\', b"v"),
        "key-invalid": seed(b"\xff\xc3", b"v"),
        "key-v": seed(b"v", b"value"),
        "key-v-value-dropped": seed(b"v", b"\x01" * 400),
        "key-truncated": seed(b"truncated", b"x"),
        "long-ascii": seed(b"k", b"a" * 2100),
        "long-escapes": seed(b"k", b"\x01" * 400),
        "long-utf8": seed(b"k", "\u00e9".encode() * 1000),
        "empty": seed(b"", b""),
    }
    for name, b in seeds.items():
        write("fuzz_log", name, b)


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, val):
    if isinstance(val, int):
        return varint(num << 3) + varint(val)
    if isinstance(val, str):
        val = val.encode()
    return varint(num << 3 | 2) + varint(len(val)) + val


def envelope(method, body, rid=7):
    return field(1, method) + field(2, rid) + field(3, body)


def dispatch_seeds():
    # fuzz_dispatch.c registers "resident" at start and sends its live token
    # for a Verify or Logout whose body holds "$TOKEN".
    m = "/authd.v1.Auth/"
    reg = field(1, "alice") + field(2, "alice@example.com") + field(3, "a perfectly fine passphrase")
    seeds = {
        "register-ok": envelope(m + "Register", reg),
        "register-bad-user": envelope(m + "Register", field(1, "a b") + reg[7:]),
        "register-weak": envelope(m + "Register", field(1, "bob") + field(2, "bob@example.com")
                                  + field(3, "password1234")),
        "register-bad-email": envelope(m + "Register", field(1, "carol") + field(2, "carol@")
                                       + field(3, "a perfectly fine passphrase")),
        "login-ok": envelope(m + "Login", field(1, "alice") + field(2, "a perfectly fine passphrase")),
        "login-email": envelope(m + "Login", field(1, "Alice@Example.com")
                                + field(2, "a perfectly fine passphrase")),
        "login-wrong": envelope(m + "Login", field(1, "alice") + field(2, "wrong password!!")),
        "login-unknown": envelope(m + "Login", field(1, "nobody") + field(2, "whatever password")),
        "login-empty": envelope(m + "Login", b""),
        "verify-garbage": envelope(m + "Verify", field(1, "not.a.token")),
        "verify-forged": envelope(m + "Verify", field(1, token(HDR, claims()))),
        "logout-garbage": envelope(m + "Logout", field(1, "x.y.z")),
        "verify-live": envelope(m + "Verify", field(1, "$TOKEN")),
        "logout-live": envelope(m + "Logout", field(1, "$TOKEN")),
        "login-resident": envelope(m + "Login", field(1, "resident")
                                   + field(2, "the resident's passphrase")),
        "unknown-method": envelope(m + "Frobnicate", b""),
        "method-prefix-only": envelope(m, b""),
        "method-other-service": envelope("/authd.v2.Auth/Verify", field(1, "t")),
        "bad-utf8-field": envelope(m + "Login", field(1, b"al\xffice") + field(2, "p")),
        "nul-in-field": envelope(m + "Login", field(1, b"alice\x00x") + field(2, "p")),
        "bad-wire-type": envelope(m + "Verify", b"\x0b\x0c"),
        "truncated-body": envelope(m + "Verify", b"\x0a\x7f"),
        "nested-user": envelope(m + "Register", field(1, "dave") + field(9, field(1, b"\xff"))),
        "varint-overlong": envelope(m + "Verify", b"\x08" + b"\xff" * 11),
        "no-body": field(1, m + "Verify") + field(2, 1),
        "huge-request-id": envelope(m + "Verify", field(1, "t"), rid=(1 << 64) - 1),
    }
    for name, b in seeds.items():
        write("fuzz_dispatch", name, b)


def sp_frame_seeds():
    # fuzz_sp_frame.c: 2 bytes max_body, 2 bytes chunk seed, then the stream.
    hdr = b"\x00SP\x00\x00\x30\x00\x00"  # req0
    def frame(body, bt=(b"\x80\x00\x00\x01",)):
        payload = b"".join(bt) + body
        return struct.pack(">Q", len(payload)) + payload
    env = envelope("/authd.v1.Auth/Verify", field(1, "t"))
    seeds = {
        "one": hdr + frame(env),
        "three-pipelined": hdr + frame(env) + frame(b"", (b"\x80\x00\x00\x02",)) + frame(env),
        "hops": hdr + frame(env, (b"\x00\x00\x00\x05",) * 7 + (b"\x80\x00\x00\x03",)),
        "too-many-hops": hdr + frame(env, (b"\x00\x00\x00\x05",) * 8 + (b"\x80\x00\x00\x03",)),
        "no-end-word": hdr + frame(b"", (b"\x00\x00\x00\x01",)),
        "empty-frame": hdr + struct.pack(">Q", 0),
        "huge-length": hdr + struct.pack(">Q", (1 << 64) - 1) + b"x" * 8,
        "at-limit": hdr + frame(b"y" * 256),
        "partial": hdr + frame(env)[:-3],
        "rep0-header": b"\x00SP\x00\x00\x31\x00\x00" + frame(env),
        "bad-header": b"GET / HTTP/1.1\r\n\r\n",
    }
    for name, b in seeds.items():
        write("fuzz_sp_frame", name, struct.pack(">HH", 256, 4242) + b)


def record_seeds():
    # fuzz_record.c: byte 0 even = session, odd = user; 16 bytes id; the value.
    rid = bytes(range(16))
    uid = bytes(range(100, 116))
    hash_ = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43
    def vint(num, v):
        return varint(num << 3) + varint(v)
    def user(name="alice", email="alice@example.com", h=hash_, status=1, roles=(), id_=rid,
             schema=1, extra=b""):
        b = vint(1, schema) + field(2, id_) + field(3, name) + field(4, email) + field(5, h)
        b += vint(6, status) + b"".join(field(7, r) for r in roles)
        return b + vint(8, 1700000000) + vint(9, 1700000001) + vint(10, 1700000002) + extra
    def session(uid_=uid, exp=1700000900, revoked=0, schema=1, extra=b""):
        b = vint(1, schema) + field(2, uid_) + vint(3, 1700000000) + vint(4, exp)
        return b + (vint(5, revoked) if revoked is not None else b"") + vint(6, 0) + extra
    seeds = {
        "session": (0, session()),
        "session-revoked": (0, session(revoked=1)),
        "session-revoked-overlong": (0, session(revoked=None) + b"\x28\x81\x80\x00"),
        "session-bool-past-64-bits": (0, session(revoked=None) + b"\x28" + b"\x80" * 9 + b"\x02"),
        "session-short-uid": (0, session(uid_=uid[:15])),
        "session-schema-2": (0, session(schema=2)),
        "session-unknown-field": (0, session(extra=field(15, "x"))),
        "session-negative-exp": (0, session(exp=(1 << 64) - 5)),
        "user": (1, user()),
        "user-roles": (1, user(roles=("admin", "ops", ""))),
        "user-disabled": (1, user(status=2)),
        "user-status-0": (1, user(status=0)),
        "user-status-wide": (1, user(status=(1 << 32) + 1)),
        "user-other-id": (1, user(id_=uid)),
        "user-nul-in-name": (1, user(name="ali\0ce")),
        "user-name-33": (1, user(name="a" * 33)),
        "user-17-roles": (1, user(roles=tuple("r%d" % i for i in range(17)))),
        "user-role-65": (1, user(roles=("r" * 65,))),
        "user-dup-name": (1, user(extra=field(3, "bob"))),
        "user-name-wrong-type": (1, user(extra=vint(3, 5))),
        "user-truncated": (1, user()[:-3]),
    }
    for name, (kind, b) in seeds.items():
        write("fuzz_record", name, bytes([kind]) + rid + b)


def client_envelope_seeds():
    # fuzz_client_envelope.c: the bytes of one ReplyEnvelope (code 1,
    # message 2, request_id 3, body 4, reason 5), canonical or not.
    vr = field(1, "0123456789abcdef0123456789abcdef") + field(2, "alice") + field(3, "admin") \
        + field(4, "s1") + field(5, 1700000000)
    seeds = {
        "ok": field(3, 7) + field(4, vr),
        "ok-empty-body": field(3, 7),
        "empty": b"",
        "error": field(1, 16) + field(2, "token expired") + field(3, (1 << 64) - 1)
        + field(5, "EXPIRED"),
        "error-nul-in-message": field(1, 16) + field(2, b"bad\x00hidden") + field(3, 9)
        + field(5, "EXPIRED"),
        "code-out-of-range": field(1, 300) + field(3, 7),
        "reordered": field(4, vr) + field(3, 7) + field(1, 0),
        "repeated-id": field(3, 7) + field(3, 8),
        "unknown-field": field(3, 7) + field(15, 1) + field(4, vr),
        "long-tag": b"\x98\x00\x07",
        "id-tenth-byte": b"\x18" + b"\xff" * 9 + b"\x01",
        "id-tenth-byte-2": b"\x18" + b"\xff" * 9 + b"\x02",
        "five-byte-length": b"\x22\x80\x80\x80\x80\x00",
        "length-past-end": b"\x22\x05\x01\x02",
        "wrong-wire-type": b"\x20\x05",
        "garbage": b"\xff\xff\xff",
    }
    for name, b in seeds.items():
        write("fuzz_client_envelope", name, b)


if __name__ == "__main__":
    record_seeds()
    client_envelope_seeds()
    sp_frame_seeds()
    token_seeds()
    validate_seeds()
    log_seeds()
    dispatch_seeds()
