//! The API server over TLS, as in-cluster clients reach it: kube's (and client-go's) in-cluster
//! config is `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` checked against the
//! service account's `ca.crt`. A CA and a serving certificate (for 127.0.0.1, `localhost` and
//! `kubernetes.default.svc`) are made at start; the CA is what every namespace's
//! `kube-root-ca.crt` ConfigMap holds, as kube-controller-manager publishes it. Only HTTP/1.1 is
//! offered (exec and attach are websocket upgrades).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The CA and the server configuration.
pub(crate) struct Tls {
    /// The CA certificate (PEM), what clients trust.
    pub(crate) ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// A fresh CA and a serving certificate signed by it.
    pub(crate) fn generate() -> Result<Self, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let text = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(text)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(text)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "local-cluster-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(text)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(text)?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])
        .map_err(text)?;
        server.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let cert = server.signed_by(&key, &issuer).map_err(text)?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(String::from)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key)
            .map_err(|e| format!("{e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { ca_pem: ca_cert.pem(), config: Arc::new(config) })
    }

    /// Serves `router` over TLS on `listener` until the task is aborted.
    pub(crate) async fn serve(&self, listener: TcpListener, router: Router) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, %peer, "tls handshake failed");
                        return;
                    }
                };
                let service = TowerToHyperService::new(router);
                let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, %peer, "tls connection ended");
                }
            });
        }
    }
}

/// Binds the TLS listener beside the plain one.
pub(crate) async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}
