//! TLS for PostgreSQL connections (the shared study store and the experiment index), with
//! libpq's connection parameters and their meaning, so a URL that works with `psql` works here.
//!
//! The `postgres` crate knows only `sslmode=disable|prefer|require` and refuses every other
//! `ssl*` key, and it has no TLS of its own; managed databases (and any server reached over a
//! network one does not own) need certificate checks. This module takes libpq's TLS keys out of
//! the URL, builds a rustls client configuration for them (`tokio-postgres-rustls`, the ring
//! provider) and gives the rest of the URL to `postgres`. Source of the semantics: PostgreSQL's
//! "libpq — Connection Strings" and "SSL Support" (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`), with the same environment variables and default files:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `allow`, `prefer` (default) | if the server offers TLS | only against a root certificate, if one is given or `~/.postgresql/root.crt` exists (as `verify-ca`) |
//! | `require` | yes | as `prefer` |
//! | `verify-ca` | yes | chain to the root certificate |
//! | `verify-full` | yes | chain, and the host name (or IP) in the certificate |
//!
//! `sslrootcert=system` trusts every public CA, so (as libpq 16+) it makes `verify-full` the
//! default and refuses any weaker `sslmode`. `disable` reads no file at all, and a unix-socket
//! host never uses TLS (libpq ignores `sslmode` there too).
//!
//! Differences from libpq, each deliberate or a limit of the crates:
//! - `allow` is `prefer` (TLS first, then plain: the `postgres` crate cannot try plain first),
//!   and once a root certificate is there a failed handshake is an error, not a plain retry;
//! - an `sslrootcert`, `sslcert` or `sslkey` file named but missing is an error in every mode
//!   but `disable` (libpq ignores a missing one below `verify-ca`): a typo never silently turns
//!   verification off; a key file's permissions are not checked;
//! - `sslrootcert=system` reads the operating system's store through `rustls-native-certs`
//!   (libpq asks OpenSSL for its default store);
//! - encrypted client keys (`sslpassword`) are refused by name; `sslcrl`/`sslcrldir` are
//!   refused as unknown options;
//! - certificates are checked by webpki: the host must be in the certificate's
//!   subjectAltName (the common name is not read), and a self-signed certificate that is its
//!   own CA (`CA:TRUE`) cannot be a server certificate — make a CA and sign the server's
//!   certificate with it (`crates/tunekit-cli/tests/search_postgres.rs` shows how);
//! - a URL with `hostaddr` but no `host` uses the address as the TLS server name;
//! - TLS 1.2 is the oldest version (as PostgreSQL's default `ssl_min_protocol_version`); ALPN
//!   `postgresql` is always offered (PostgreSQL 17's direct TLS needs it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode as PgSslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connection only.
    Disable,
    /// libpq: plain first, then TLS; here the same as [`SslMode::Prefer`].
    Allow,
    /// TLS if the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS; the certificate is checked only if a root certificate is there.
    Require,
    /// TLS; the certificate must chain to the root certificate.
    VerifyCa,
    /// TLS; chain, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// The TLS settings of one connection, resolved from the URL, then libpq's environment
/// variables (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), then libpq's default files
/// under `~/.postgresql/` (`root.crt`, `postgresql.crt`, `postgresql.key`, used when present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert` (or the default file when it exists).
    pub root_cert: Option<RootCerts>,
    /// `sslcert` and `sslkey`: a client certificate chain and its key, both PEM.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The TLS keys of libpq that this module handles (taken out of the URL).
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Split a `postgresql://` URL into the URL `postgres` parses (without libpq's TLS keys) and
/// the TLS settings; `env` reads an environment variable, `home` is the user's home directory.
///
/// Errors ([`Error::Config`], naming `shown`, the URL without its password): an unknown
/// `sslmode`, `sslpassword` (encrypted client keys), `sslcert` without `sslkey` or the other way
/// round.
pub fn split_url(
    url: &str,
    shown: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<(String, TlsSettings)> {
    let bad = |what: String| Error::Config(format!("PostgreSQL {shown}: {what}"));
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key_dec = percent_decode(key);
        if key_dec == "sslpassword" {
            return Err(bad(
                "sslpassword (an encrypted client key) is not supported: decrypt the key \
                 (`openssl pkey -in KEY -out KEY.plain`) and keep it readable only by you"
                    .into(),
            ));
        }
        if TLS_KEYS.contains(&key_dec.as_str()) {
            found.retain(|(k, _)| *k != key_dec);
            found.push((key_dec, percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let get = |key: &str, var: &str| -> Option<String> {
        found
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env(var))
            .filter(|v| !v.is_empty())
    };
    let mode = match get("sslmode", "PGSSLMODE") {
        None => None,
        Some(v) => Some(SslMode::parse(&v).ok_or_else(|| {
            bad(format!(
                "sslmode={v:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ))
        })?),
    };
    let dot_pg = home.map(|h| h.join(".postgresql"));
    let root_cert = match get("sslrootcert", "PGSSLROOTCERT") {
        Some(v) if v == "system" => Some(RootCerts::System),
        Some(v) => Some(RootCerts::File(PathBuf::from(v))),
        None => dot_pg
            .as_ref()
            .map(|d| d.join("root.crt"))
            .filter(|p| p.is_file())
            .map(RootCerts::File),
    };
    // Every public CA is trusted with `system`: only the host name tells servers apart.
    let mode = match (mode, &root_cert) {
        (None, Some(RootCerts::System)) => SslMode::VerifyFull,
        (Some(m), Some(RootCerts::System)) if m != SslMode::VerifyFull && m != SslMode::Disable => {
            return Err(bad(format!(
                "weak sslmode={} may not be used with sslrootcert=system (use verify-full)",
                mode_name(m)
            )));
        }
        (m, _) => m.unwrap_or(SslMode::Prefer),
    };
    // libpq: either file may come from ~/.postgresql/ when only the other is named.
    let default_file = |name: &str| {
        dot_pg
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
    };
    let client_cert = match (get("sslcert", "PGSSLCERT"), get("sslkey", "PGSSLKEY")) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (Some(c), None) => match default_file("postgresql.key") {
            Some(k) => Some((PathBuf::from(c), k)),
            None => {
                return Err(bad(format!(
                    "sslcert {c} is given without sslkey (and there is no \
                     ~/.postgresql/postgresql.key)"
                )));
            }
        },
        (None, Some(k)) => match default_file("postgresql.crt") {
            Some(c) => Some((c, PathBuf::from(k))),
            None => {
                return Err(bad(format!(
                    "sslkey {k} is given without sslcert (and there is no \
                     ~/.postgresql/postgresql.crt)"
                )));
            }
        },
        (None, None) => match (
            default_file("postgresql.crt"),
            default_file("postgresql.key"),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(c), None) => {
                return Err(bad(format!(
                    "the client certificate {} has no private key file beside it \
                     (postgresql.key)",
                    c.display()
                )));
            }
            _ => None,
        },
    };
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((
        rest,
        TlsSettings {
            mode,
            root_cert,
            client_cert,
        },
    ))
}

/// `%XX` escapes of a URL component decoded (invalid escapes kept as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl TlsSettings {
    /// The `sslmode` that the `postgres` crate gets: it negotiates TLS, this module checks it.
    pub fn pg_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// The TLS connector for these settings.
    ///
    /// Errors ([`Error::Config`], naming `shown` and the file): `verify-ca`/`verify-full` without
    /// a root certificate; a root or client certificate file that is missing, unreadable or
    /// holds no certificate; a key file without an unencrypted private key; an empty system
    /// store.
    pub fn connector(&self, shown: &str) -> Result<MakeRustlsConnect> {
        let bad = |what: String| Error::Config(format!("PostgreSQL {shown}: {what}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &self.root_cert {
            None if self.mode.verifies() => {
                return Err(bad(format!(
                    "sslmode={} needs the server's root certificate: give sslrootcert=FILE \
                     (PEM), sslrootcert=system, or put it in ~/.postgresql/root.crt",
                    mode_name(self.mode)
                )));
            }
            None => None,
            Some(RootCerts::File(path)) => Some(roots_from_file(path).map_err(bad)?),
            Some(RootCerts::System) => Some(system_roots().map_err(bad)?),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS set-up: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(NoCertificateCheck(provider)),
            Some(roots) if self.mode == SslMode::VerifyFull => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad(format!("root certificates: {e}")))?
            }
            Some(roots) => Arc::new(ChainOnly {
                roots,
                signatures: NoCertificateCheck(provider),
            }),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certs_from_file(cert, "sslcert").map_err(bad)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    bad(format!(
                        "sslkey {}: no unencrypted PEM private key ({e})",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(format!("client certificate {}: {e}", cert.display())))?
            }
        };
        let mut config = config;
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// Every certificate of a PEM file; at least one.
fn certs_from_file(
    path: &Path,
    key: &str,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{key} {}: cannot read PEM certificates ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots_from_file(path: &Path) -> std::result::Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_file(path, "sslrootcert")? {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> std::result::Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "sslrootcert=system: the operating system's certificate store is empty or \
             unreadable{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        ));
    }
    Ok(roots)
}

/// `prefer`/`require` without a root certificate: encrypted, the certificate unchecked (libpq's
/// behaviour); the handshake's signatures are still verified, so the session key belongs to
/// whoever holds the certificate's key.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with a root certificate): the chain to a root, the
/// validity dates and the server-authentication usage are checked (webpki's
/// `verify_server_cert_signed_by_trust_anchor`), the host name is not.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    /// The handshake-signature checks, which are [`NoCertificateCheck`]'s.
    signatures: NoCertificateCheck,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.signatures.0.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// The rustls reason inside a connection error's chain of causes, if any.
pub fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// A sentence for the user on a refused certificate, or `""`.
pub fn certificate_hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            " (the server's certificate does not name the host in the URL: connect by a name \
             its subjectAltName holds)"
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (the server's certificate is not signed by a CA that sslrootcert trusts)"
        }
        rustls::Error::InvalidCertificate(_) => " (the server's certificate was refused)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(
        url: &str,
        env: &[(&str, &str)],
        home: Option<&Path>,
    ) -> Result<(String, TlsSettings)> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        split_url(
            url,
            "URL",
            &|var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
            home,
        )
    }

    #[test]
    fn libpq_tls_keys_leave_the_url_and_the_rest_stays_in_order() {
        let (rest, tls) = split(
            "postgresql://tk@db/studies?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=tk",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://tk@db/studies?connect_timeout=5&application_name=tk"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/tmp/ca x.pem")))
        );
        assert_eq!(tls.client_cert, None);
        assert_eq!(tls.pg_mode(), PgSslMode::Require);
        let (rest, tls) = split("postgresql://tk@db/studies", &[], None).unwrap();
        assert_eq!(rest, "postgresql://tk@db/studies");
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
        assert_eq!(tls.pg_mode(), PgSslMode::Prefer);
    }

    #[test]
    fn the_url_wins_over_the_environment_which_wins_over_the_default_files() {
        let home = tempfile::tempdir().unwrap();
        let dot = home.path().join(".postgresql");
        std::fs::create_dir(&dot).unwrap();
        std::fs::write(dot.join("root.crt"), "x").unwrap();
        std::fs::write(dot.join("postgresql.crt"), "x").unwrap();
        std::fs::write(dot.join("postgresql.key"), "x").unwrap();
        let (_, tls) = split("postgresql://db/x", &[], Some(home.path())).unwrap();
        assert_eq!(tls.root_cert, Some(RootCerts::File(dot.join("root.crt"))));
        assert_eq!(
            tls.client_cert,
            Some((dot.join("postgresql.crt"), dot.join("postgresql.key")))
        );
        let env = [("PGSSLMODE", "require"), ("PGSSLROOTCERT", "/env/ca.pem")];
        let (_, tls) = split("postgresql://db/x", &env, Some(home.path())).unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.root_cert, Some(RootCerts::File("/env/ca.pem".into())));
        let (_, tls) = split(
            "postgresql://db/x?sslmode=disable&sslrootcert=/a.pem",
            &env,
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(tls.pg_mode(), PgSslMode::Disable);
        assert_eq!(tls.root_cert, Some(RootCerts::File("/a.pem".into())));
    }

    #[test]
    fn the_system_store_means_verify_full_and_refuses_weaker_modes() {
        let (_, tls) = split("postgresql://db/x?sslrootcert=system", &[], None).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        for weak in ["allow", "prefer", "require", "verify-ca"] {
            let url = format!("postgresql://db/x?sslrootcert=system&sslmode={weak}");
            let e = split(&url, &[], None).unwrap_err().to_string();
            assert!(e.contains(weak) && e.contains("use verify-full"), "{e}");
        }
        let env = [("PGSSLROOTCERT", "system")];
        let e = split("postgresql://db/x?sslmode=require", &env, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslrootcert=system"), "{e}");
    }

    #[test]
    fn a_client_certificate_half_comes_from_the_default_files_or_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let dot = home.path().join(".postgresql");
        std::fs::create_dir(&dot).unwrap();
        std::fs::write(dot.join("postgresql.key"), "x").unwrap();
        let (_, tls) = split("postgresql://db/x?sslcert=/c.pem", &[], Some(home.path())).unwrap();
        assert_eq!(
            tls.client_cert,
            Some((PathBuf::from("/c.pem"), dot.join("postgresql.key")))
        );
        std::fs::remove_file(dot.join("postgresql.key")).unwrap();
        std::fs::write(dot.join("postgresql.crt"), "x").unwrap();
        let e = split("postgresql://db/x", &[], Some(home.path()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("postgresql.crt") && e.contains("no private key"),
            "{e}"
        );
    }

    #[test]
    fn bad_tls_keys_are_refused_by_name() {
        let e = split("postgresql://db/x?sslmode=verify_full", &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verify_full") && e.contains("verify-full"),
            "{e}"
        );
        let e = split("postgresql://db/x?sslcert=/c.pem", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslcert /c.pem is given without sslkey"), "{e}");
        let e = split("postgresql://db/x?sslkey=/k.pem", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslkey /k.pem is given without sslcert"), "{e}");
        let e = split("postgresql://db/x?sslpassword=hunter2", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslpassword") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn verification_without_roots_or_with_a_bad_file_is_refused_naming_the_file() {
        let (_, tls) = split("postgresql://db/x?sslmode=verify-ca", &[], None).unwrap();
        let e = tls.connector("URL").err().unwrap().to_string();
        assert!(
            e.contains("verify-ca needs the server's root certificate"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!(
            "postgresql://db/x?sslmode=verify-full&sslrootcert={}",
            empty.display()
        );
        let (_, tls) = split(&url, &[], None).unwrap();
        let e = tls.connector("URL").err().unwrap().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let url = format!(
            "postgresql://db/x?sslmode=require&sslrootcert={}",
            missing.display()
        );
        let (_, tls) = split(&url, &[], None).unwrap();
        let e = tls.connector("URL").err().unwrap().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
