//! TLS to Postgres, against the test bed's role that may log in only over TLS
//! (`EVENTOR_PG_URL_TLS`, its CA in `EVENTOR_PG_TLS_CA`, a CA that signed nothing in
//! `EVENTOR_PG_TLS_WRONG_CA`): every kind of store connection (the pool, the run lock's,
//! the LISTEN session's) gets through with `verify-full`, and each refusal says which one
//! it was. Skipped without those variables, unless `EVENTOR_REQUIRE_PG=1`.

mod common;

use eventor_store::{
    PgLocation, RunKey, SslMode, Store, StoreError, StoreLocation, TlsMaterial, TlsRefusal,
};

use common::PgSchema;

const PASSWORD: &str = "ev-tls-pw";

/// The bed's TLS role and CA files.
struct Bed {
    url: String,
    ca: String,
    wrong_ca: String,
    /// The trusting superuser's URL, which drops the test's schema.
    admin: String,
}

fn bed() -> Option<Bed> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Bed {
            url: var("EVENTOR_PG_URL_TLS")?,
            ca: var("EVENTOR_PG_TLS_CA")?,
            wrong_ca: var("EVENTOR_PG_TLS_WRONG_CA")?,
            admin: var("EVENTOR_PG_URL")?,
        })
    })();
    let required = std::env::var("EVENTOR_REQUIRE_PG").is_ok_and(|v| v == "1");
    match found {
        Some(bed) => Some(bed),
        None if required => panic!(
            "EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL_TLS, EVENTOR_PG_TLS_CA or \
             EVENTOR_PG_TLS_WRONG_CA is not set (a test bed from before TLS: scripts/testbed.sh pg-tls)"
        ),
        None => {
            eprintln!("skipped: EVENTOR_PG_URL_TLS is not set");
            None
        }
    }
}

/// The TLS role's store in a fresh schema, with `params` added to its URL.
fn location(bed: &Bed, params: &str) -> (PgSchema, StoreLocation) {
    let schema = PgSchema::fresh(&bed.admin);
    let url = format!("{}?schema={}&{params}", bed.url, schema.name);
    (
        schema,
        StoreLocation::parse(&url).expect("the TLS url parses"),
    )
}

/// The refusal inside an open's error, and its whole text (checked for the password).
fn refusal(result: Result<Store, StoreError>) -> (TlsRefusal, String) {
    let Err(e) = result else {
        panic!("the store opened")
    };
    let text = chain(&e);
    assert!(!text.contains(PASSWORD), "the password is in: {text}");
    let StoreError::Open { source, .. } = e else {
        panic!("not an open error: {text}")
    };
    match source.downcast_ref::<TlsRefusal>() {
        Some(refusal) => (refusal.clone(), text),
        None => panic!("not a TLS refusal: {text}"),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

#[tokio::test]
async fn verify_full_gets_the_pool_the_run_lock_and_listen_through_a_tls_only_role() {
    let Some(bed) = bed() else { return };
    let (schema, location) = location(&bed, &format!("sslmode=verify-full&sslrootcert={}", bed.ca));
    let store = Store::open(&location).await.expect("verify-full opens");
    assert!(store.runs(None).await.unwrap().is_empty());
    let guard = store
        .lock_run("tls-run")
        .await
        .expect("the run lock's session");
    let run = RunKey {
        run_id: "tls-run".into(),
        recovery: 0,
    };
    let _subscription = store.subscribe(run).await.expect("the LISTEN session");
    drop(guard);
    drop(store);
    schema.drop_now().await;
}

#[tokio::test]
async fn plain_text_is_refused_saying_the_server_requires_tls() {
    let Some(bed) = bed() else { return };
    let (schema, location) = location(&bed, "sslmode=disable");
    let (refusal, text) = refusal(Store::open(&location).await);
    assert_eq!(
        refusal,
        TlsRefusal::ServerRequiresTls(SslMode::Disable),
        "{text}"
    );
    assert!(text.contains("requires TLS"), "{text}");
    schema.drop_now().await;
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_the_certificate() {
    let Some(bed) = bed() else { return };
    let params = format!("sslmode=verify-full&sslrootcert={}", bed.wrong_ca);
    let (schema, location) = location(&bed, &params);
    let (refusal, text) = refusal(Store::open(&location).await);
    let TlsRefusal::Untrusted {
        subject, issuer, ..
    } = refusal
    else {
        panic!("{text}")
    };
    assert_eq!(subject, "CN=eventor testbed postgres", "{text}");
    assert_eq!(issuer, "CN=eventor testbed CA", "{text}");
    assert!(text.contains("not trusted"), "{text}");
    schema.drop_now().await;
}

/// The name checked is the one the TLS material says (a tunnelled agent's), here one the
/// certificate lacks: `verify-full` refuses it, `verify-ca` (the chain only) does not.
#[tokio::test]
async fn a_name_the_certificate_lacks_is_refused_by_verify_full_only() {
    let Some(bed) = bed() else { return };
    let (schema, location) = location(&bed, "");
    let StoreLocation::Postgres(pg) = location else {
        unreachable!()
    };
    let with = |mode| {
        let tls = TlsMaterial {
            mode,
            server_name: Some("db.example".into()),
            root_cert: Some(std::fs::read(&bed.ca).unwrap()),
            ..TlsMaterial::disabled()
        };
        StoreLocation::Postgres(PgLocation::clone(&pg).with_tls(tls))
    };
    let (refusal, text) = refusal(Store::open(&with(SslMode::VerifyFull)).await);
    let TlsRefusal::NameMismatch {
        expected,
        presented,
        ..
    } = refusal
    else {
        panic!("{text}")
    };
    assert_eq!(expected, "db.example");
    assert!(presented.contains("127.0.0.1"), "{text}");
    Store::open(&with(SslMode::VerifyCa))
        .await
        .expect("verify-ca checks the chain only");
    schema.drop_now().await;
}

/// `require` without a root certificate checks nothing (as libpq), so even a server whose
/// CA is not at hand is reached over TLS; and `prefer`, the default, uses TLS when offered.
#[tokio::test]
async fn require_and_the_default_prefer_use_tls_without_a_root_certificate() {
    let Some(bed) = bed() else { return };
    for params in ["sslmode=require", ""] {
        let (schema, location) = location(&bed, params);
        Store::open(&location)
            .await
            .unwrap_or_else(|e| panic!("{params:?}: {}", chain(&e)));
        schema.drop_now().await;
    }
}
