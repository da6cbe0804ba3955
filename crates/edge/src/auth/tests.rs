//! Digest authentication in virtual time: answers, replays, stale nonces, lockouts and
//! their bounds.

use super::*;
use std::net::Ipv4Addr;

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn reg() -> Attempt<'static> {
    reg_from(SRC)
}

fn reg_from(source: IpAddr) -> Attempt<'static> {
    Attempt {
        method: "REGISTER",
        request_uri: "sip:orbit",
        source,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn authenticator(cfg: &AuthConfig, t0: Instant) -> Authenticator {
    Authenticator::with_rng("orbit", cfg, t0, &mut StdRng::seed_from_u64(1))
}

fn ext() -> Extension {
    Extension {
        password: Some("pw1001".into()),
        ..Default::default()
    }
}

/// Extensions 1000..1100, each with password "pw" and its number.
fn extensions() -> HashMap<String, Extension> {
    (1000..1100)
        .map(|n| {
            let e = Extension {
                password: Some(format!("pw{n}")),
                ..Default::default()
            };
            (n.to_string(), e)
        })
        .collect()
}

/// A default authenticator made at a new `t0`, the extensions 1000..1100, and a nonce it
/// issued to SRC at `t0`.
fn with_a_nonce() -> (Instant, HashMap<String, Extension>, Authenticator, String) {
    let t0 = Instant::now();
    let x = extensions();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let n = a.nonce(t0, SRC);
    (t0, x, a, n)
}

/// A digest answer to a REGISTER challenge for `nonce`, as `user` with `pw` for `uri`, counted
/// `nc`.
fn answer_counted(alg: Algorithm, nonce: &str, user: &str, pw: &str, uri: &str, nc: u32) -> String {
    let challenge = format!(
        "Digest realm=\"orbit\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
        alg.name()
    );
    super::answer(
        &challenge,
        &Credentials {
            user,
            password: pw,
            method: "REGISTER",
            uri,
            nc,
            cnonce: "c0ffee",
        },
    )
    .unwrap()
}

/// A digest answer as `user` with `pw` for `uri`, the nonce's first use.
fn answer_as(alg: Algorithm, nonce: &str, user: &str, pw: &str, uri: &str) -> String {
    answer_counted(alg, nonce, user, pw, uri, 1)
}

/// 1001's digest answer with `pw` for sip:orbit, counted `nc` (hex, as on the wire).
fn answer(alg: Algorithm, nonce: &str, nc: &str, pw: &str) -> String {
    let nc = u32::from_str_radix(nc, 16).unwrap();
    answer_counted(alg, nonce, "1001", pw, "sip:orbit", nc)
}

/// 1001's REGISTER from SRC at `t`, answered by `alg` to `nonce` with count `nc` and `pw`,
/// verified against the extension `e`.
fn verify_1001(
    a: &mut Authenticator,
    t: Instant,
    e: &Extension,
    alg: Algorithm,
    nonce: &str,
    nc: &str,
    pw: &str,
) -> Verdict {
    let h = answer(alg, nonce, nc, pw);
    a.verify(t, &reg(), Some(&h), |_| Some(e))
}

/// A REGISTER from `source` as `user` with `pw`, on a fresh nonce.
fn try_pw(
    a: &mut Authenticator,
    exts: &HashMap<String, Extension>,
    t: Instant,
    source: IpAddr,
    user: &str,
    pw: &str,
) -> Verdict {
    let n = a.nonce(t, source);
    let h = answer_as(Algorithm::Md5, &n, user, pw, "sip:orbit");
    a.verify(t, &reg_from(source), Some(&h), |u| exts.get(u))
}

fn ok(user: &str) -> Verdict {
    Verdict::Ok { user: user.into() }
}

const WRONG: Verdict = Verdict::Denied("wrong credentials");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts WARN events while `f` runs on this thread.
struct Warns(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for Warns {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if *e.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn count_warns(f: impl FnOnce()) -> usize {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::subscriber::with_default(Warns(n.clone()), f);
    n.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn digest_md5_and_sha256_with_replay_and_stale() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let e = ext();
    let ch = a.challenges(t0, false, SRC);
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256"));
    let nonce = nonce_of(&ch[0]);
    for alg in [Algorithm::Sha256, Algorithm::Md5] {
        let n = a.nonce(t0, SRC);
        assert_eq!(
            verify_1001(&mut a, t0, &e, alg, &n, "00000001", "pw1001"),
            Verdict::Ok {
                user: "1001".into()
            }
        );
        // The same nc again is a replay.
        assert!(matches!(
            verify_1001(&mut a, t0, &e, alg, &n, "00000001", "pw1001"),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            verify_1001(&mut a, t0, &e, alg, &n, "00000002", "pw1001"),
            Verdict::Ok { .. }
        ));
    }
    let md5 = Algorithm::Md5;
    assert_eq!(
        verify_1001(&mut a, t0, &e, md5, &nonce, "00000001", "nope"),
        Verdict::Denied("wrong credentials")
    );
    let later = t0 + Duration::from_secs(301);
    assert_eq!(
        verify_1001(&mut a, later, &e, md5, &nonce, "00000005", "pw1001"),
        Verdict::Stale
    );
    // A nonce we never issued.
    assert_eq!(
        verify_1001(&mut a, t0, &e, md5, "AAAA", "00000001", "pw1001"),
        Verdict::Challenge
    );
    assert_eq!(a.verify(t0, &reg(), None, |_| Some(&e)), Verdict::Challenge);
}

#[test]
fn nonce_table_expires_and_stays_bounded() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let e = ext();
    for i in 0..100 {
        let t = t0 + Duration::from_secs(i * 10);
        let n = a.nonce(t, SRC);
        assert!(matches!(
            verify_1001(&mut a, t, &e, Algorithm::Md5, &n, "00000001", "pw1001"),
            Verdict::Ok { .. }
        ));
    }
    // A 300 s lifetime at one nonce per 10 s: about 30 are tracked, not 100.
    assert!(a.tracked_nonces() <= 32, "{}", a.tracked_nonces());
}

#[test]
fn ha1_secrets() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let e = Extension {
        ha1_md5: Some(Algorithm::Md5.hash(&["1001", "orbit", "pw1001"])),
        ..Default::default()
    };
    let n = a.nonce(t0, SRC);
    assert!(matches!(
        verify_1001(&mut a, t0, &e, Algorithm::Md5, &n, "00000001", "pw1001"),
        Verdict::Ok { .. }
    ));
    assert_eq!(
        verify_1001(&mut a, t0, &e, Algorithm::Sha256, &n, "00000002", "pw1001"),
        Verdict::Denied("no secret for algorithm")
    );
}

#[test]
fn twenty_wrong_digests_lock_the_extension_for_that_source_until_the_lockout_ends() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let x = extensions();
    let warns = count_warns(|| {
        for i in 0..20 {
            let v = try_pw(&mut a, &x, t0 + ms(i * 100), SRC, "1001", "nope");
            // The tenth starts the lockout; the rest are refused unchecked.
            assert_eq!(v, if i < 10 { WRONG } else { Verdict::Locked }, "{i}");
        }
        let locked_at = t0 + ms(900);
        // The right password is refused too while locked.
        let t = t0 + Duration::from_secs(5);
        assert_eq!(
            try_pw(&mut a, &x, t, SRC, "1001", "pw1001"),
            Verdict::Locked
        );
        // Only that extension from that source: elsewhere, and others here, still work.
        assert_eq!(try_pw(&mut a, &x, t, ip(2), "1001", "pw1001"), ok("1001"));
        assert_eq!(try_pw(&mut a, &x, t, SRC, "1002", "pw1002"), ok("1002"));
        // 30 s, then the right password works.
        let end = locked_at + Duration::from_secs(30);
        let v = try_pw(&mut a, &x, end - ms(1), SRC, "1001", "pw1001");
        assert_eq!(v, Verdict::Locked);
        assert_eq!(try_pw(&mut a, &x, end, SRC, "1001", "pw1001"), ok("1001"));
    });
    // Logged once for the lockout, not for each refused request.
    assert_eq!(warns, 1);
}

#[test]
fn a_success_resets_the_count_for_that_source_and_extension() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let x = extensions();
    for i in 0..9 {
        assert_eq!(try_pw(&mut a, &x, t0 + ms(i), SRC, "1001", "x"), WRONG);
    }
    assert_eq!(
        try_pw(&mut a, &x, t0 + ms(9), SRC, "1001", "pw1001"),
        ok("1001")
    );
    // Nine more would make 18 within the window without the reset.
    for i in 10..19 {
        assert_eq!(try_pw(&mut a, &x, t0 + ms(i), SRC, "1001", "x"), WRONG);
    }
    assert_eq!(
        try_pw(&mut a, &x, t0 + ms(19), SRC, "1001", "pw1001"),
        ok("1001")
    );
}

#[test]
fn lockouts_double_up_to_the_cap_and_are_forgotten_after_quiet() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let x = extensions();
    let mut t = t0;
    let lock = |a: &mut Authenticator, t: Instant| {
        for _ in 0..10 {
            assert_eq!(try_pw(a, &x, t, SRC, "1001", "x"), WRONG);
        }
    };
    for secs in [30, 60, 120, 240, 480, 900, 900] {
        lock(&mut a, t);
        let d = Duration::from_secs(secs);
        assert_eq!(
            try_pw(&mut a, &x, t + d - ms(1), SRC, "1001", "x"),
            Verdict::Locked
        );
        t += d;
    }
    // Quiet for longer than the window and the longest lockout: back to 30 s.
    t += Duration::from_secs(961);
    lock(&mut a, t);
    let d = Duration::from_secs(30);
    assert_eq!(
        try_pw(&mut a, &x, t + d - ms(1), SRC, "1001", "x"),
        Verdict::Locked
    );
    assert_eq!(try_pw(&mut a, &x, t + d, SRC, "1001", "x"), WRONG);
}

#[test]
fn one_source_guessing_many_extensions_is_locked_except_where_it_authenticated() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let x = extensions();
    assert_eq!(try_pw(&mut a, &x, t0, SRC, "1099", "pw1099"), ok("1099"));
    // One guess each at 30 extensions: no pair reaches 10, the source reaches 30.
    for n in 0..30u64 {
        let user = (1000 + n).to_string();
        let v = try_pw(&mut a, &x, t0 + ms(n), SRC, &user, "x");
        assert_eq!(v, WRONG);
    }
    let t = t0 + Duration::from_secs(1);
    assert_eq!(
        try_pw(&mut a, &x, t, SRC, "1050", "pw1050"),
        Verdict::Locked
    );
    // The phone that authenticated here before keeps working; other sources too.
    assert_eq!(try_pw(&mut a, &x, t, SRC, "1099", "pw1099"), ok("1099"));
    assert_eq!(try_pw(&mut a, &x, t, ip(2), "1050", "pw1050"), ok("1050"));
    let end = t0 + ms(29) + Duration::from_secs(30);
    assert_eq!(try_pw(&mut a, &x, end, SRC, "1050", "pw1050"), ok("1050"));
    // An IPv6 source is its /64: addresses in it share one count.
    let v6 = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
    for n in 0..10 {
        assert_eq!(try_pw(&mut a, &x, end, v6(n), "1001", "x"), WRONG);
    }
    assert_eq!(
        try_pw(&mut a, &x, end, v6(99), "1001", "pw1001"),
        Verdict::Locked
    );
}

#[test]
fn one_extension_guessed_from_many_sources_is_locked_except_where_it_authenticated() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let x = extensions();
    let home = ip(1000);
    assert_eq!(try_pw(&mut a, &x, t0, home, "1001", "pw1001"), ok("1001"));
    // One guess from each of 50 sources: no source reaches a limit, the extension does.
    for n in 0..50 {
        let v = try_pw(&mut a, &x, t0 + ms(n.into()), ip(n), "1001", "x");
        assert_eq!(v, WRONG);
    }
    let t = t0 + Duration::from_secs(1);
    assert_eq!(
        try_pw(&mut a, &x, t, ip(60), "1001", "pw1001"),
        Verdict::Locked
    );
    // Not where the extension's phone is; nor other extensions.
    assert_eq!(try_pw(&mut a, &x, t, home, "1001", "pw1001"), ok("1001"));
    assert_eq!(try_pw(&mut a, &x, t, ip(60), "1002", "pw1002"), ok("1002"));
    let end = t0 + ms(49) + Duration::from_secs(30);
    assert_eq!(
        try_pw(&mut a, &x, end, ip(60), "1001", "pw1001"),
        ok("1001")
    );
}

#[test]
fn failure_tables_stay_bounded_and_keep_the_active() {
    let t0 = Instant::now();
    let mut a = authenticator(&AuthConfig::default(), t0);
    a.by_pair = Lru::new(64);
    a.by_source = Lru::new(64);
    a.by_ext = Lru::new(64);
    let x = extensions();
    for _ in 0..10 {
        try_pw(&mut a, &x, t0, SRC, "1001", "x");
    }
    // A spray from 1,000 sources at made-up users, while the locked source keeps trying.
    for n in 0..1000u32 {
        let t = t0 + ms(n.into());
        let v = try_pw(&mut a, &x, t, ip(n), &format!("u{n}"), "x");
        assert_eq!(v, Verdict::Denied("unknown user"));
        if n % 20 == 0 {
            let v = try_pw(&mut a, &x, t, SRC, "1001", "pw1001");
            assert_eq!(v, Verdict::Locked);
        }
    }
    let (pairs, sources, exts) = a.tracked_failures();
    assert!(
        pairs <= 64 && sources <= 64 && exts <= 64,
        "{pairs} {sources} {exts}"
    );
    // Quiet entries are dropped with time.
    let later = t0 + Duration::from_secs(2000);
    assert_eq!(try_pw(&mut a, &x, later, SRC, "1001", "pw1001"), ok("1001"));
    assert_eq!(a.tracked_failures(), (0, 0, 0));
}

#[test]
fn failures_in_the_name_of_another_source_lock_nothing() {
    // A stranger takes nonces at its own address and sends wrong digests as 1001 with the
    // phone's address forged as their source: each is a fresh challenge, no failure.
    let t0 = Instant::now();
    let x = extensions();
    let mut a = authenticator(&AuthConfig::default(), t0);
    let (stranger, phone) = (ip(66), ip(1));
    for i in 0..30 {
        let t = t0 + ms(i);
        let n = a.nonce(t, stranger);
        let h = answer_as(Algorithm::Md5, &n, "1001", "guess", "sip:orbit");
        assert_eq!(
            a.verify(t, &reg_from(phone), Some(&h), |u| x.get(u)),
            Verdict::Challenge
        );
    }
    assert_eq!(
        try_pw(&mut a, &x, t0 + ms(40), phone, "1001", "pw1001"),
        ok("1001")
    );
    // The nonce is good from where it was issued.
    let n = a.nonce(t0 + ms(50), stranger);
    let h = answer_as(Algorithm::Md5, &n, "1001", "pw1001", "sip:orbit");
    assert_eq!(
        a.verify(t0 + ms(50), &reg_from(stranger), Some(&h), |u| x.get(u)),
        ok("1001")
    );
}

#[test]
fn the_algorithm_must_have_been_offered() {
    let t0 = Instant::now();
    let x = extensions();
    let sha_only = AuthConfig {
        algorithms: vec!["SHA-256".into()],
        ..AuthConfig::default()
    };
    let mut a = authenticator(&sha_only, t0);
    let n = a.nonce(t0, SRC);
    let md5 = answer_as(Algorithm::Md5, &n, "1001", "pw1001", "sip:orbit");
    let bare = md5.replace(", algorithm=MD5", "");
    assert!(!bare.contains("algorithm"));
    for h in [&md5, &bare] {
        assert_eq!(
            a.verify(t0, &reg(), Some(h), |u| x.get(u)),
            Verdict::Denied("algorithm not offered")
        );
    }
    // Without the parameter it is MD5, accepted when MD5 is offered.
    let mut a = authenticator(&AuthConfig::default(), t0);
    let n = a.nonce(t0, SRC);
    let md5 = answer_as(Algorithm::Md5, &n, "1001", "pw1001", "sip:orbit");
    let bare = md5.replace(", algorithm=MD5", "");
    assert_eq!(a.verify(t0, &reg(), Some(&bare), |u| x.get(u)), ok("1001"));
}

#[test]
fn the_digest_uri_must_be_the_request_uri() {
    let (t0, x, mut a, n) = with_a_nonce();
    let h = answer_as(Algorithm::Sha256, &n, "1001", "pw1001", "sip:elsewhere");
    assert_eq!(
        a.verify(t0, &reg(), Some(&h), |u| x.get(u)),
        Verdict::Denied("uri is not the Request-URI")
    );
    let h = answer_as(Algorithm::Sha256, &n, "1001", "pw1001", "sip:orbit");
    assert_eq!(a.verify(t0, &reg(), Some(&h), |u| x.get(u)), ok("1001"));
}

#[test]
fn responses_without_qop_are_refused() {
    let (t0, x, mut a, n) = with_a_nonce();
    // RFC 2069: response = H(HA1:nonce:HA2), right password.
    let alg = Algorithm::Md5;
    let ha1 = alg.hash(&["1001", "orbit", "pw1001"]);
    let ha2 = alg.hash(&["REGISTER", "sip:orbit"]);
    let response = alg.hash(&[&ha1, &n, &ha2]);
    let h = format!("Digest username=\"1001\", realm=\"orbit\", nonce=\"{n}\", uri=\"sip:orbit\", response=\"{response}\", algorithm=MD5");
    assert_eq!(
        a.verify(t0, &reg(), Some(&h), |u| x.get(u)),
        Verdict::Denied("qop=auth required")
    );
}

#[test]
fn responses_compare_as_digest_values() {
    let d = Algorithm::Sha256.hash(&["x"]);
    assert!(same_digest(&d, &d));
    assert!(same_digest(&d, &d.to_ascii_uppercase()));
    let mut other = d.clone().into_bytes();
    other[63] = if other[63] == b'0' { b'1' } else { b'0' };
    assert!(!same_digest(&d, std::str::from_utf8(&other).unwrap()));
    assert!(!same_digest(&d, &d[..62]));
    assert!(!same_digest(&d, &format!("{d}00")));
    assert!(!same_digest(&d, &d.replace(&d[..2], "zz")));
    // An upper-case response is the same digest.
    let (t0, x, mut a, n) = with_a_nonce();
    let h = answer_as(Algorithm::Sha256, &n, "1001", "pw1001", "sip:orbit");
    let i = h.find("response=\"").unwrap() + 10;
    let h = format!(
        "{}{}{}",
        &h[..i],
        h[i..i + 64].to_ascii_uppercase(),
        &h[i + 64..]
    );
    assert_eq!(a.verify(t0, &reg(), Some(&h), |u| x.get(u)), ok("1001"));
}

#[test]
fn nonces_come_from_the_generator_handed_in() {
    let t0 = Instant::now();
    let cfg = AuthConfig::default();
    let make = |seed| Authenticator::with_rng("orbit", &cfg, t0, &mut StdRng::seed_from_u64(seed));
    let (mut a, mut b, mut c) = (make(7), make(7), make(8));
    let n = a.nonce(t0, SRC);
    assert_eq!(n, b.nonce(t0, SRC));
    assert_ne!(n, c.nonce(t0, SRC));
    assert_ne!(n, a.nonce(t0, SRC));
    // The same seed gives the same key: b accepts a's nonces.
    let h = answer_as(Algorithm::Md5, &n, "1001", "pw1001", "sip:orbit");
    let x = extensions();
    assert_eq!(b.verify(t0, &reg(), Some(&h), |u| x.get(u)), ok("1001"));
    assert_eq!(
        c.verify(t0, &reg(), Some(&h), |u| x.get(u)),
        Verdict::Challenge
    );
}

fn nonce_of(ch: &str) -> String {
    let i = ch.find("nonce=\"").unwrap() + 7;
    ch[i..i + ch[i..].find('"').unwrap()].to_string()
}
