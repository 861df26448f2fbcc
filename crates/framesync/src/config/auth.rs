//! `[source.auth]` and `[sink.auth]`: how framesync proves who it is to a server — a bearer
//! token, basic auth, an API key in the query, or an OAuth2 client-credentials grant.
//!
//! Every secret (`token`, `password`, `key`, `client_secret`) is written as `${VAR}` and read
//! from the environment: a literal secret in the file is refused, since a config file is copied,
//! committed and shown far more often than an environment. `user` and `client_id` may be
//! literal; from `${VAR}` they are secrets too. Every secret is registered with the Redactor, in
//! the forms it travels in (as is, percent-encoded, in a Basic header).

use std::fmt;

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;

use super::Env;
use super::check;
use crate::redact::Redactor;
use crate::template::encode;

/// A value from the environment: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub(crate) fn new(value: &str) -> Secret {
        Secret(value.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How framesync authenticates to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: Secret, password: Secret },
    /// `?<param>=<key>` added to every request's URL, percent-encoded.
    Query { param: String, key: Secret },
    /// A token from an OAuth2 client-credentials grant, sent as a bearer token.
    OAuth2(OAuth2Config),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// `source.auth` or `sink.auth`: messages name their keys under it.
    pub section: &'static str,
    pub token_url: String,
    pub client_id: Secret,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub auth_style: AuthStyle,
}

/// Where the client's id and secret go in a token request (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStyle {
    /// An `Authorization: Basic` header: the RFC's default, which every server must take.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Bearer,
    Basic,
    Query,
    Oauth2,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bearer => "bearer",
            Kind::Basic => "basic",
            Kind::Query => "query",
            Kind::Oauth2 => "oauth2",
        }
    }

    /// The keys this kind takes beside `kind`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Bearer => &["token"],
            Kind::Basic => &["user", "password"],
            Kind::Query => &["param", "key"],
            Kind::Oauth2 => &["token_url", "client_id", "client_secret", "scope", "audience", "auth_style"],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    kind: Option<Kind>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    param: Option<String>,
    key: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    auth_style: Option<AuthStyle>,
}

impl RawAuth {
    /// The keys given, by name.
    fn given(&self) -> Vec<&'static str> {
        let keys: [(&str, bool); 11] = [
            ("token", self.token.is_some()),
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
            ("param", self.param.is_some()),
            ("key", self.key.is_some()),
            ("token_url", self.token_url.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("scope", self.scope.is_some()),
            ("audience", self.audience.is_some()),
            ("auth_style", self.auth_style.is_some()),
        ];
        keys.into_iter().filter(|(_, given)| *given).map(|(name, _)| name).collect()
    }
}

/// Checks `section`'s auth table (`source.auth` or `sink.auth`) against the section's headers.
pub(super) fn check(
    section: &'static str,
    raw: Option<RawAuth>,
    headers: &[(String, String)],
    env: Env,
    secrets: &mut Redactor,
) -> Result<Option<AuthConfig>> {
    let Some(raw) = raw else { return Ok(None) };
    let kind = raw.kind.ok_or_else(|| {
        anyhow!("{section}.kind: missing; add it: kind = \"bearer\", \"basic\", \"query\" or \"oauth2\"")
    })?;
    if let Some(stray) = raw.given().into_iter().find(|k| !kind.keys().contains(k)) {
        bail!("{section}.{stray}: not a key of kind = \"{}\", which takes {}", kind.name(), kind.keys().join(", "));
    }
    let headers_key = section.replace(".auth", ".headers");
    if headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) {
        bail!(
            "{section}: an Authorization header is also set in {headers_key}; give the credentials in one place (remove the header or {section})"
        );
    }
    let key = |name: &str| format!("{section}.{name}");
    let need = |name: &str, value: Option<String>, example: &str| -> Result<String> {
        value.ok_or_else(|| anyhow!("{section}.{name}: missing for kind = \"{}\"; add it, e.g. {example}", kind.name()))
    };
    let secret = |name: &str, value: Option<String>, var: &str, secrets: &mut Redactor| -> Result<Secret> {
        let value = need(name, value, &format!("{name} = \"${{{var}}}\""))?;
        from_env(&key(name), &value, env, secrets)
    };
    let config = match kind {
        Kind::Bearer => AuthConfig::Bearer { token: secret("token", raw.token, "API_TOKEN", secrets)? },
        Kind::Basic => {
            let user = need("user", raw.user, "user = \"framesync\"")?;
            let user = Secret(check::expand(&key("user"), &user, env, secrets)?);
            if user.0.contains(':') {
                bail!("{section}.user: holds a ':', which basic auth cannot carry in a user name");
            }
            let password = secret("password", raw.password, "API_PASSWORD", secrets)?;
            let header = format!("{}:{}", user.0, password.0);
            secrets.add(&base64::engine::general_purpose::STANDARD.encode(header));
            AuthConfig::Basic { user, password }
        }
        Kind::Query => {
            let param = need("param", raw.param, "param = \"api_key\"")?;
            if param.is_empty() {
                bail!("{section}.param: must name the query parameter, e.g. param = \"api_key\"");
            }
            let key = secret("key", raw.key, "API_KEY", secrets)?;
            secrets.add(&encode(&key.0));
            AuthConfig::Query { param, key }
        }
        Kind::Oauth2 => {
            let url = need("token_url", raw.token_url, "token_url = \"https://auth.example.com/oauth/token\"")?;
            let token_url = check::url(&key("token_url"), &url, &[], env, secrets)?;
            let client_id = need("client_id", raw.client_id, "client_id = \"framesync\"")?;
            let client_id = Secret(check::expand(&key("client_id"), &client_id, env, secrets)?);
            let client_secret = secret("client_secret", raw.client_secret, "CLIENT_SECRET", secrets)?;
            for (value, name) in [(&client_id, "client_id"), (&client_secret, "client_secret")] {
                if value.0.is_empty() {
                    bail!("{section}.{name}: is empty");
                }
                secrets.add(&encode(&value.0));
            }
            let pair = format!("{}:{}", encode(&client_id.0), encode(&client_secret.0));
            secrets.add(&base64::engine::general_purpose::STANDARD.encode(pair));
            AuthConfig::OAuth2(OAuth2Config {
                section,
                token_url,
                client_id,
                client_secret,
                scope: raw.scope,
                audience: raw.audience,
                auth_style: raw.auth_style.unwrap_or(AuthStyle::Basic),
            })
        }
    };
    Ok(Some(config))
}

/// A secret as the file must write it: `${VAR}` and nothing else, `VAR` set and not empty.
fn from_env(key: &str, text: &str, env: Env, secrets: &mut Redactor) -> Result<Secret> {
    let name = text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}'));
    if name.is_none_or(|name| name.contains(['$', '{', '}'])) {
        bail!(
            "{key}: a secret cannot be written in the file; write it as \"${{VAR}}\" and export VAR in framesync's environment"
        );
    }
    let value = check::expand(key, text, env, secrets)?;
    if value.is_empty() {
        bail!("{key}: the environment variable {} is empty", name.unwrap_or_default());
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests;
