//! What keeps the kind suite off clusters that are not kind ones: it deploys a runner, binds
//! RBAC and creates pods, which must never happen on a cluster someone relies on.

/// Refuses a kube context that is not a kind one (`kind-<cluster>`); returns the kind cluster's
/// name.
///
/// # Errors
///
/// The refusal, saying why and what to do.
pub(crate) fn kind_cluster_of(context: &str) -> Result<&str, String> {
    match context.strip_prefix("kind-") {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(format!(
            "refusing to run against kube context {context:?}: the kind suite deploys a runner, RBAC and pods, so it only runs on a kind cluster (a context named kind-<name>); leave --context out to let it create one"
        )),
    }
}

/// Refuses a cluster whose nodes are not all kind's (`spec.providerID` of `kind://…`), so a
/// context merely named `kind-…` cannot point the suite at another cluster.
///
/// # Errors
///
/// The refusal, naming what the nodes are.
pub(crate) fn require_kind_nodes(context: &str, provider_ids: &[String]) -> Result<(), String> {
    if provider_ids.is_empty() {
        return Err(format!(
            "refusing to run: the cluster of kube context {context:?} has no nodes"
        ));
    }
    let others: Vec<&String> = provider_ids.iter().filter(|p| !p.starts_with("kind://")).collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to run: kube context {context:?} is named like a kind one, but its nodes are not kind's (providerID {others:?}, not kind://...)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kind_context_is_accepted() {
        assert_eq!(kind_cluster_of("kind-podrunner-e2e"), Ok("podrunner-e2e"));
        for context in ["minikube", "gke_prod_europe-west1_main", "kind", "kind-", "my-kind-x", ""]
        {
            let refusal = kind_cluster_of(context).expect_err(context);
            assert!(refusal.starts_with("refusing to run against kube context"), "{refusal}");
            assert!(refusal.contains(&format!("{context:?}")), "{refusal}");
        }
    }

    #[test]
    fn only_kind_nodes_are_accepted() {
        let kind = |n: &str| format!("kind://docker/podrunner-e2e/{n}");
        assert_eq!(require_kind_nodes("kind-x", &[kind("a"), kind("b")]), Ok(()));
        let mixed = [kind("a"), "aws:///eu-west-1a/i-0abc".to_owned()];
        let refusal = require_kind_nodes("kind-x", &mixed).expect_err("not kind");
        assert!(refusal.contains("aws:///eu-west-1a/i-0abc"), "{refusal}");
        assert!(require_kind_nodes("kind-x", &[]).is_err());
    }
}
