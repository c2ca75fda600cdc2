//! The cluster's certificates, as kubeadm lays them out: one CA, the API server's serving
//! certificate, a client certificate per component, the kubelet's serving certificate and the
//! service-account key pair. Everything is written as PEM under `<dir>/pki`.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Error;

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    /// The certificate (PEM).
    pub(crate) cert: PathBuf,
    /// The private key (PEM).
    pub(crate) key: PathBuf,
}

/// Who a client certificate names: `CN` is the user, `O` the groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIdentity<'a> {
    /// The file stem under `pki/`.
    pub(crate) file: &'a str,
    /// The user name.
    pub(crate) user: &'a str,
    /// The groups.
    pub(crate) groups: &'a [&'a str],
}

/// The clients the cluster's components are.
pub(crate) const CLIENTS: &[ClientIdentity<'static>] = &[
    ClientIdentity { file: "admin", user: "kubernetes-admin", groups: &["system:masters"] },
    ClientIdentity {
        file: "controller-manager",
        user: "system:kube-controller-manager",
        groups: &[],
    },
    ClientIdentity { file: "scheduler", user: "system:kube-scheduler", groups: &[] },
    ClientIdentity { file: "kube-proxy", user: "system:kube-proxy", groups: &[] },
    ClientIdentity {
        file: "apiserver-kubelet-client",
        user: "kube-apiserver-kubelet-client",
        groups: &[],
    },
];

/// The written PKI.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    /// The CA certificate (and key, to sign the controller-manager's CSRs).
    pub(crate) ca: CertFiles,
    /// The API server's serving certificate.
    pub(crate) apiserver: CertFiles,
    /// The kubelet's serving certificate.
    pub(crate) kubelet_serving: CertFiles,
    /// The service-account signing key (private) and its public half.
    pub(crate) service_account_key: PathBuf,
    /// The service-account public key.
    pub(crate) service_account_pub: PathBuf,
    dir: PathBuf,
}

impl Pki {
    /// The client certificate of `file` (one of [`CLIENTS`], or the node's `kubelet`).
    pub(crate) fn client(&self, file: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        }
    }

    /// Generates everything under `<dir>`. `node_ip` and `service_ip` (the `kubernetes` Service's
    /// address) are in the API server's certificate; `node_name` names the kubelet.
    pub(crate) fn generate(
        dir: &Path,
        node_name: &str,
        node_ip: IpAddr,
        service_ip: IpAddr,
    ) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(|source| Error::io("create", dir, source))?;
        let ca_key = KeyPair::generate()?;
        let ca = ca_params()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_files = write_pair(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let loopback: IpAddr = [127, 0, 0, 1].into();
        let apiserver = sign(
            dir,
            "apiserver",
            &issuer,
            "kube-apiserver",
            &[],
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
            &[loopback, node_ip, service_ip],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let kubelet_serving = sign(
            dir,
            "kubelet-serving",
            &issuer,
            &format!("system:node:{node_name}"),
            &["system:nodes"],
            &[node_name, "localhost"],
            &[loopback, node_ip],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let kubelet_user = format!("system:node:{node_name}");
        let node =
            ClientIdentity { file: "kubelet", user: &kubelet_user, groups: &["system:nodes"] };
        for client in CLIENTS.iter().chain(std::iter::once(&node)) {
            sign(
                dir,
                client.file,
                &issuer,
                client.user,
                client.groups,
                &[],
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
        }
        let sa = KeyPair::generate()?;
        let service_account_key = dir.join("sa.key");
        let service_account_pub = dir.join("sa.pub");
        write_file(&service_account_key, &sa.serialize_pem())?;
        write_file(&service_account_pub, &sa.public_key_pem())?;
        Ok(Self {
            ca: ca_files,
            apiserver,
            kubelet_serving,
            service_account_key,
            service_account_pub,
            dir: dir.to_path_buf(),
        })
    }
}

/// The CA's parameters: the same at generation and when [`issue_client`] signs with it later.
fn ca_params() -> Result<CertificateParams, Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "local-cluster-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

/// A client certificate for `user` in `groups`, signed by the CA under `dir` (written as
/// `<dir>/<file>.crt` and `.key`): tests run the runner as a user of their choice.
pub(crate) fn issue_client(
    dir: &Path,
    file: &str,
    user: &str,
    groups: &[&str],
) -> Result<CertFiles, Error> {
    let key_path = dir.join("ca.key");
    let pem =
        fs::read_to_string(&key_path).map_err(|source| Error::io("read", &key_path, source))?;
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&pem)?);
    sign(dir, file, &issuer, user, groups, &[], &[], ExtendedKeyUsagePurpose::ClientAuth)
}

#[allow(clippy::too_many_arguments)] // reason: a certificate's fields, named at each call
fn sign(
    dir: &Path,
    file: &str,
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organizations: &[&str],
    dns_names: &[&str],
    ips: &[IpAddr],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertFiles, Error> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(dns_names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(DnType::CommonName, common_name);
    for organization in organizations {
        params.distinguished_name.push(DnType::OrganizationName, *organization);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    write_pair(dir, file, &cert.pem(), &key.serialize_pem())
}

fn write_pair(dir: &Path, file: &str, cert: &str, key: &str) -> Result<CertFiles, Error> {
    let files =
        CertFiles { cert: dir.join(format!("{file}.crt")), key: dir.join(format!("{file}.key")) };
    write_file(&files.cert, cert)?;
    write_file(&files.key, key)?;
    Ok(files)
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|source| Error::io("write", path, source))
}
