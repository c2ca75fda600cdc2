//! `runner verify`: asks GitLab (`POST /api/v4/runners/verify`) whether each runner's token is
//! valid, prints `NAME: valid` or `NAME: invalid (why)`: the token refused (403), GitLab not
//! reached (with the cause chain), or another answer; exits 1 if any is not valid.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use podrunner_coordinator::{Client, ClientConfig, Verification, VersionInfo};
use secrecy::SecretString;

use crate::cli::VerifyArgs;
use crate::settings;

/// Why a verification did not answer: GitLab unreachable (the cause chain: DNS, refused, TLS,
/// timeout) apart from GitLab answering something else.
fn failure(e: &podrunner_coordinator::Error) -> String {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    match e.kind() {
        "transport" | "tls" => format!("invalid (GitLab could not be reached: {chain})"),
        _ => format!("invalid (verification failed: {chain})"),
    }
}

pub(crate) fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (file, config) = match settings::load_config(&args.config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let _logging = crate::logging::Logging::init(
        crate::logging::format(None, config.log_format),
        &crate::logging::level(args.log_level, config.log_level.as_deref()),
    )?;
    let mut system_id = settings::SystemId::load(&file.path, None);
    system_id.save();
    let system_id = system_id.id;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let mut all_valid = true;
    for runner in &config.runners {
        let name = runner.display_name();
        let raw = &runner.raw;
        let (Some(url), Some(token)) = (raw.url.clone(), raw.token.clone()) else {
            println!("{name}: invalid (no url or token in {})", file.path.display());
            all_valid = false;
            continue;
        };
        let mut client_config = ClientConfig::new(
            url,
            SecretString::from(token),
            system_id.clone(),
            VersionInfo::podrunner(name.clone(), raw.executor.clone().unwrap_or_default()),
        );
        client_config.request_timeout = Duration::from_secs(30);
        if let Some(ca) = raw.tls_ca_file.as_deref().filter(|f| !f.is_empty()) {
            client_config.tls_ca_pem = Some(
                std::fs::read(ca).with_context(|| format!("failed to read tls-ca-file {ca}"))?,
            );
        }
        let result = match Client::new(client_config) {
            Ok(client) => runtime.block_on(client.verify()),
            Err(e) => Err(e),
        };
        match result {
            Ok(Verification::Valid { .. }) => println!("{name}: valid"),
            Ok(Verification::Invalid) => {
                println!("{name}: invalid (GitLab answered 403: the token is not valid)");
                all_valid = false;
            }
            Err(e) => {
                println!("{name}: {}", failure(&e));
                all_valid = false;
            }
        }
    }
    Ok(if all_valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
