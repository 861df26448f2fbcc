//! The push of the metrics to a Prometheus Pushgateway, the convention for batch jobs whose
//! host Prometheus cannot scrape (a Kubernetes pod, a container that exits). The body is the
//! text the metrics file gets; it is PUT to the group `job="framesync"`, `pipeline="<name>"`,
//! so each push replaces the whole group — the text describes the whole pipeline, and a series
//! that is gone from it (a command that no longer runs) is gone from the Pushgateway too.

use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine;

use crate::config::Transport;

/// A push is one small request; a Pushgateway that takes longer is as good as down.
const TIMEOUT: Duration = Duration::from_secs(10);

/// PUTs `text` to the pipeline's group at the Pushgateway whose base URL is `base`.
pub fn push(base: &str, pipeline: &str, text: &str) -> Result<()> {
    let url = group_url(base, pipeline);
    let agent = crate::http::agent(TIMEOUT, &Transport::plain("run.pushgateway"));
    let request = agent.put(&url).header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    let mut response = match request.send(text) {
        Ok(response) => response,
        Err(e) => bail!("cannot push the metrics to the Pushgateway {url}: {}", crate::http::why(&e)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let location = if status.is_redirection() {
        format!(" (redirected to {}, not followed)", crate::http::location(&response))
    } else {
        String::new()
    };
    bail!("the Pushgateway {url} refused the metrics: {status}{location} {}", crate::http::excerpt(&body))
}

/// Asks the Pushgateway at `base` whether it is ready (`GET <base>/-/ready`), changing nothing:
/// `Ok(None)` when it is, `Ok(Some(answer))` when something answered otherwise (a proxy, or not
/// a Pushgateway), an error when nothing answered.
pub fn ready(base: &str) -> Result<Option<String>> {
    let url = format!("{base}/-/ready");
    let agent = crate::http::agent(TIMEOUT, &Transport::plain("run.pushgateway"));
    let response = match agent.get(&url).call() {
        Ok(response) => response,
        Err(e) => bail!("GET {url}: {}", crate::http::why(&e)),
    };
    let status = response.status();
    Ok(if status.is_success() {
        None
    } else if status.is_redirection() {
        Some(format!("GET {url}: {status}, redirected to {} (not followed)", crate::http::location(&response)))
    } else {
        Some(format!("GET {url}: {status}"))
    })
}

/// `<base>/metrics/job/framesync/pipeline/<name>`; a name that is not plainly safe in a path
/// segment goes base64url-encoded (`pipeline@base64/...`), as the Pushgateway's API provides.
pub fn group_url(base: &str, pipeline: &str) -> String {
    let plain = !pipeline.is_empty()
        && pipeline.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && pipeline != "."
        && pipeline != "..";
    if plain {
        format!("{base}/metrics/job/framesync/pipeline/{pipeline}")
    } else {
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(pipeline);
        // The Pushgateway reads "=" as the empty value, which base64 of "" does not spell.
        let encoded = if encoded.is_empty() { "=".to_owned() } else { encoded };
        format!("{base}/metrics/job/framesync/pipeline@base64/{encoded}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_go_as_they_are_and_others_in_base64url() {
        let base = "http://pg:9091";
        assert_eq!(group_url(base, "orders"), "http://pg:9091/metrics/job/framesync/pipeline/orders");
        assert_eq!(group_url(base, "a.b-c_1"), "http://pg:9091/metrics/job/framesync/pipeline/a.b-c_1");
        assert_eq!(group_url(base, "a b/c"), "http://pg:9091/metrics/job/framesync/pipeline@base64/YSBiL2M=");
        assert_eq!(group_url(base, ".."), "http://pg:9091/metrics/job/framesync/pipeline@base64/Li4=");
        assert_eq!(group_url(base, ""), "http://pg:9091/metrics/job/framesync/pipeline@base64/=");
    }
}
