//! Twilio's side: the account whose webhooks are verified with its tokens, the other
//! accounts taken too (from `TWILIO_AUTH_TOKEN__AC…` variables and the routes file's
//! `accounts`), and the webhook keys. Secrets are never repeated in an error.

use super::error::{Place, Problem};
use super::route_spec::AccountSpec;
use super::values::{is_sid, parse_base_url, parse_bool, Secret};
use super::vars::{on_cloud_run, Reader};
use std::collections::HashMap;
use std::num::NonZeroUsize;

#[derive(Debug, Clone)]
pub struct TwilioSettings {
    pub account_sid: String,
    /// The auth token, then the secondary token during a rotation.
    pub auth_tokens: Vec<Secret>,
    /// The exact URL configured in Twilio, when the operator knows it.
    pub webhook_url: Option<String>,
    /// How many proxies of ours stand in front (`TRUST_PROXY`), each appending its value
    /// to `X-Forwarded-Proto`/`X-Forwarded-Host`: the public URL is the value that many
    /// from the right, the one our outermost proxy appended; what the client sent sits
    /// further left and never counts. `None`: the headers are ignored.
    pub trust_proxy: Option<NonZeroUsize>,
    /// The hosts Twilio is given (`TWILIO_WEBHOOK_HOSTS`), lower case: a webhook sent to
    /// another host is refused before its signature is checked.
    pub webhook_hosts: Vec<String>,
    /// On Cloud Run, the service whose own URL pins the host (found at start-up).
    pub cloud_run: Option<CloudRun>,
    /// Webhooks configuration SharedKeys by account and name (`TWILIO_WEBHOOK_KEYS` the
    /// main account's, `TWILIO_WEBHOOK_KEYS__AC…` another's): a key signs only its own
    /// account's webhooks, and two accounts may each have a key of the same name.
    pub webhook_keys: HashMap<(String, String), Secret>,
    /// The sub-accounts (or other accounts) whose webhooks are taken too, each with its
    /// own tokens and API credentials; `account_sid` is not among them.
    pub other_accounts: Vec<Account>,
}

/// A Cloud Run service or job (`K_SERVICE`, `CLOUD_RUN_JOB`), and where its metadata
/// server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudRun {
    /// The service's name; `None` in a job (`check`), which serves nothing.
    pub service: Option<String>,
    /// `GCE_METADATA_HOST`, or the metadata server's own address.
    pub metadata_host: String,
}

/// An account other than `TWILIO_ACCOUNT_SID` whose webhooks the bridge takes.
#[derive(Debug, Clone)]
pub struct Account {
    pub sid: String,
    /// Its auth token, then the secondary during a rotation: they verify its webhooks.
    pub auth_tokens: Vec<Secret>,
    /// The Messages API user: the account SID, or an API key SID.
    pub api_username: String,
    /// The API key's secret; or the auth tokens.
    pub api_passwords: Vec<Secret>,
}

impl TwilioSettings {
    /// The tokens that verify the webhooks of `account_sid`, if it is one of ours.
    pub fn tokens_of(&self, account_sid: &str) -> Option<&[Secret]> {
        if account_sid == self.account_sid {
            return Some(&self.auth_tokens);
        }
        self.other_accounts
            .iter()
            .find(|account| account.sid == account_sid)
            .map(|account| account.auth_tokens.as_slice())
    }

    /// The SharedKey `name` of `account_sid`.
    pub fn webhook_key(&self, account_sid: &str, name: &str) -> Option<&Secret> {
        self.webhook_keys
            .get(&(account_sid.to_owned(), name.to_owned()))
    }

    /// Whether any account has a SharedKey named `name`.
    pub fn has_webhook_key_named(&self, name: &str) -> bool {
        self.webhook_keys.keys().any(|(_, key)| key == name)
    }

    /// Whether something other than the request pins the host webhooks are signed
    /// for: the URL, a host list, or Cloud Run's own URL.
    pub fn host_is_pinned(&self) -> bool {
        self.webhook_url.is_some() || !self.webhook_hosts.is_empty() || self.cloud_run.is_some()
    }
}

const ACCOUNT_SID: &str =
    "must be AC followed by 32 hexadecimal characters, as shown in the Twilio console";

pub(super) fn read(
    reader: &mut Reader<'_>,
    file_accounts: &[AccountSpec],
) -> Option<TwilioSettings> {
    let account_sid = reader.required("TWILIO_ACCOUNT_SID");
    if let Some(sid) = account_sid {
        if !is_sid(sid, "AC") {
            reader.fail_var("TWILIO_ACCOUNT_SID", Problem::invalid(ACCOUNT_SID, sid));
        }
    }
    let token = reader.required("TWILIO_AUTH_TOKEN");
    let secondary = reader.get("TWILIO_AUTH_TOKEN_SECONDARY").map(Secret::new);
    let webhook_url = reader.parsed("TWILIO_WEBHOOK_URL", |v| {
        parse_base_url(v)
            .map(|_| v.to_owned())
            .map_err(|_| "must be the full http(s):// URL configured in Twilio".to_owned())
    });
    let cloud_run = on_cloud_run(reader.vars).then(|| CloudRun {
        service: reader.get("K_SERVICE").map(str::to_owned),
        metadata_host: reader
            .get("GCE_METADATA_HOST")
            .unwrap_or(crate::gcp_metadata::DEFAULT_HOST)
            .to_owned(),
    });
    // Cloud Run's front end is one proxy.
    let trust_proxy = reader
        .parsed("TRUST_PROXY", parse_proxy_hops)
        .unwrap_or_else(|| cloud_run.as_ref().map(|_| NonZeroUsize::MIN));
    let webhook_hosts = reader
        .parsed("TWILIO_WEBHOOK_HOSTS", parse_hosts)
        .unwrap_or_default();
    let webhook_keys = webhook_keys(reader, account_sid);
    let other_accounts = other_accounts(reader, file_accounts);
    let auth_tokens = std::iter::once(Secret::new(token?))
        .chain(secondary)
        .collect();
    Some(TwilioSettings {
        account_sid: account_sid?.to_owned(),
        auth_tokens,
        webhook_url,
        trust_proxy,
        webhook_hosts,
        cloud_run,
        webhook_keys,
        other_accounts,
    })
}

/// `TRUST_PROXY`: `true` (one proxy of ours), `false`, or how many proxies of ours
/// stand in front, each appending to `X-Forwarded-*`.
fn parse_proxy_hops(value: &str) -> Result<Option<NonZeroUsize>, String> {
    const EXPECTED: &str =
        "must be true, false, or how many proxies of yours stand in front (1 to 10; true is 1)";
    if let Ok(trusted) = parse_bool(value) {
        return Ok(trusted.then_some(NonZeroUsize::MIN));
    }
    match value.parse::<usize>() {
        Ok(hops @ 1..=10) => Ok(NonZeroUsize::new(hops)),
        _ => Err(EXPECTED.to_owned()),
    }
}

/// `TWILIO_WEBHOOK_HOSTS`: host names, separated by commas, as written in the URLs
/// given to Twilio (no scheme, port or path).
fn parse_hosts(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            let name = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
            match name && !host.starts_with(['.', '-']) {
                true => Ok(host.to_ascii_lowercase()),
                false => Err(
                    "must be host names separated by commas, such as bot.example.com (no scheme, port or path)"
                        .to_owned(),
                ),
            }
        })
        .collect()
}

/// `TWILIO_WEBHOOK_KEYS` (the main account's) and `TWILIO_WEBHOOK_KEYS__AC…`: `name=secret`
/// pairs. A name is one key within an account: given twice for one account, which one
/// signs would depend on the order variables are read, so it is refused.
fn webhook_keys(
    reader: &mut Reader<'_>,
    account_sid: Option<&str>,
) -> HashMap<(String, String), Secret> {
    let mut webhook_keys = HashMap::new();
    // Where each (account, name) was given, to name both places of a duplicate.
    let mut given_in: HashMap<(String, String), &str> = HashMap::new();
    for name in reader.names_starting("TWILIO_WEBHOOK_KEYS") {
        let account = match &name["TWILIO_WEBHOOK_KEYS".len()..] {
            "" => match account_sid {
                Some(sid) => sid,
                None => continue,
            },
            rest => match rest.strip_prefix("__") {
                Some(sid) => sid,
                None => continue,
            },
        };
        let keys = reader.parsed_secret(name, |v| {
            v.split(',')
                .filter(|entry| !entry.trim().is_empty())
                .map(|entry| match entry.split_once('=') {
                    Some((key, secret)) if !key.trim().is_empty() && !secret.trim().is_empty() => {
                        Ok((key.trim().to_owned(), Secret::new(secret.trim())))
                    }
                    _ => Err("must be name=secret pairs, separated by commas".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()
        });
        for (key, secret) in keys.unwrap_or_default() {
            let id = (account.to_owned(), key);
            if let Some(first) = given_in.get(&id) {
                let also = match *first == name {
                    true => "twice".to_owned(),
                    false => format!("again, as {first} does"),
                };
                reader.fail_var(
                    name,
                    Problem::Conflict(format!(
                        "names the webhook key {:?} of account {account} {also}: a key's name must be one key within its account",
                        id.1
                    )),
                );
                continue;
            }
            given_in.insert(id.clone(), name);
            webhook_keys.insert(id, secret);
        }
    }
    webhook_keys
}

/// An account other than the main one before its secrets are read, with the places
/// its problems are reported at.
struct OtherAccount {
    sid: String,
    /// Where the SID was written.
    sid_place: Place,
    token_var: String,
    /// Where the token's variable is named, when not by the variable itself.
    token_named_at: Option<Place>,
    secondary_var: Option<String>,
    key_sid: Option<String>,
    key_sid_place: Place,
    key_secret_var: Option<String>,
}

/// Accounts from `TWILIO_AUTH_TOKEN__AC…` (with `TWILIO_AUTH_TOKEN_SECONDARY__AC…`,
/// `TWILIO_API_KEY_SID__AC…` and `TWILIO_API_KEY_SECRET__AC…`), and from the routes
/// file's `accounts`, which name the variables that hold the secrets.
fn other_accounts(reader: &mut Reader<'_>, file_accounts: &[AccountSpec]) -> Vec<Account> {
    let from_vars = reader
        .names_starting("TWILIO_AUTH_TOKEN__")
        .into_iter()
        .map(|name| {
            let sid = &name["TWILIO_AUTH_TOKEN__".len()..];
            OtherAccount {
                sid: sid.to_owned(),
                sid_place: Place::var(name),
                token_var: name.to_owned(),
                token_named_at: None,
                secondary_var: Some(format!("TWILIO_AUTH_TOKEN_SECONDARY__{sid}")),
                key_sid: reader
                    .get(&format!("TWILIO_API_KEY_SID__{sid}"))
                    .map(str::to_owned),
                key_sid_place: Place::var(format!("TWILIO_API_KEY_SID__{sid}")),
                key_secret_var: Some(format!("TWILIO_API_KEY_SECRET__{sid}")),
            }
        });
    let field = |index, field| Place::AccountField { index, field };
    let from_file = file_accounts
        .iter()
        .enumerate()
        .map(|(index, spec)| OtherAccount {
            sid: spec.sid.clone(),
            sid_place: field(index, "sid"),
            token_var: spec.auth_token_env.clone(),
            token_named_at: Some(field(index, "auth_token_env")),
            secondary_var: spec.auth_token_secondary_env.clone(),
            key_sid: spec.api_key_sid.clone(),
            key_sid_place: field(index, "api_key_sid"),
            key_secret_var: spec.api_key_secret_env.clone(),
        });
    let specs: Vec<OtherAccount> = from_vars.chain(from_file).collect();
    specs
        .into_iter()
        .filter_map(|spec| other_account(reader, spec))
        .collect()
}

fn other_account(reader: &mut Reader<'_>, spec: OtherAccount) -> Option<Account> {
    if !is_sid(&spec.sid, "AC") {
        let problem = match spec.token_named_at {
            None => Problem::invalid_secret(
                "must end in an account SID: AC followed by 32 hexadecimal characters",
            ),
            Some(_) => Problem::invalid(
                "must be AC followed by 32 hexadecimal characters",
                &spec.sid,
            ),
        };
        reader.fail(spec.sid_place, problem);
        return None;
    }
    let Some(token) = reader.get(&spec.token_var).map(Secret::new) else {
        // A token written where its variable's name belongs must not be printed.
        let looks_like_a_name = spec
            .token_var
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let holds = format!("the auth token of {}", spec.sid);
        match (looks_like_a_name, spec.token_named_at) {
            (false, Some(place)) => reader.fail(
                place,
                Problem::invalid_secret(format!("must name a variable that holds {holds}")),
            ),
            _ => reader.fail_var(&spec.token_var, Problem::missing_because(holds)),
        }
        return None;
    };
    let tokens: Vec<Secret> = std::iter::once(token)
        .chain(
            spec.secondary_var
                .and_then(|v| reader.get(&v))
                .map(Secret::new),
        )
        .collect();
    let key_secret = spec
        .key_secret_var
        .as_deref()
        .and_then(|v| reader.get(v))
        .map(Secret::new);
    let (api_username, api_passwords) = match (spec.key_sid, key_secret) {
        (Some(key), Some(secret)) if is_sid(&key, "SK") => (key, vec![secret]),
        (Some(key), _) => {
            reader.fail(
                spec.key_sid_place,
                Problem::invalid(
                    "must be SK followed by 32 hexadecimal characters, with its secret set",
                    &key,
                ),
            );
            return None;
        }
        (None, _) => (spec.sid.clone(), tokens.clone()),
    };
    Some(Account {
        sid: spec.sid,
        auth_tokens: tokens,
        api_username,
        api_passwords,
    })
}
