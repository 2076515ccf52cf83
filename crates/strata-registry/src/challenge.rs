//! `WWW-Authenticate` challenges (RFC 7235) as registries send them: `Basic realm="..."` for
//! htpasswd-style registries, `Bearer realm="...",service="...",scope="..."` for registries
//! that hand out tokens (the distribution token protocol).

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

/// What the registry asks for before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Send the user name and password with every request.
    Basic,
    /// Get a token from `realm` for `scope` and send that.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The challenge of a 401 answer. Bearer wins when a registry offers both: a token keeps the
/// password off most requests. `None` when there is no challenge strata can answer.
pub(crate) fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    let challenges: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    let bearer = challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }));
    bearer.or_else(|| challenges.first()).cloned()
}

/// All challenges of one header value; unknown schemes and a Bearer without realm are left
/// out (there is nowhere to get its token).
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    split_challenges(value)
        .into_iter()
        .filter_map(|(scheme, params)| to_challenge(&scheme, &params))
        .collect()
}

fn to_challenge(scheme: &str, params: &[(String, String)]) -> Option<Challenge> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(Challenge::Bearer {
        realm: param("realm").filter(|r| !r.is_empty())?,
        service: param("service"),
        scope: param("scope"),
    })
}

/// Splits `Scheme k=v, k="v, with comma", Other k=v` into schemes with their parameters.
/// A new challenge starts at a token that is not followed by `=`.
fn split_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (token, after) = rest.split_at(token_end);
        if token.is_empty() {
            break;
        }
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=') {
            let (value, remaining) = read_value(value_part.trim_start());
            if let Some((_, params)) = out.last_mut() {
                params.push((token.to_string(), value));
            }
            rest = remaining;
        } else {
            out.push((token.to_string(), Vec::new()));
            rest = after_ws;
        }
    }
    out
}

/// A quoted string (with `\` escapes) or a bare token; returns it and what follows.
fn read_value(text: &str) -> (String, &str) {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(',').unwrap_or(text.len());
        return (text[..end].trim().to_string(), &text[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &quoted[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            _ => value.push(c),
        }
    }
    // An unterminated quote: take what there is rather than guess.
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scope: scope.map(str::to_string),
        }
    }

    #[test]
    fn docker_hub_style_bearer_with_a_comma_in_the_scope() {
        let value = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/env:pull,push""#;
        assert_eq!(
            parse_challenges(value),
            [bearer(
                "https://auth.example/token",
                Some("registry.example"),
                Some("repository:team/env:pull,push")
            )]
        );
    }

    #[test]
    fn basic_and_case_and_spacing_variants() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            [Challenge::Basic]
        );
        assert_eq!(
            parse_challenges(r#"bearer Realm = "http://127.0.0.1:1/t" , Service=reg"#),
            [bearer("http://127.0.0.1:1/t", Some("reg"), None)]
        );
        assert_eq!(
            parse_challenges(r#"Bearer realm="a\"b""#),
            [bearer("a\"b", None, None)]
        );
    }

    #[test]
    fn several_challenges_in_one_value_and_unknown_schemes() {
        let value = r#"Negotiate, Basic realm="r", Bearer realm="https://t/x",scope="s""#;
        assert_eq!(
            parse_challenges(value),
            [Challenge::Basic, bearer("https://t/x", None, Some("s"))]
        );
        // Nowhere to get a token: not a usable challenge.
        assert_eq!(parse_challenges(r#"Bearer service="x""#), []);
        assert_eq!(parse_challenges(""), []);
    }

    #[test]
    fn bearer_is_preferred_over_basic_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"r\""),
        );
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://t\""),
        );
        assert_eq!(
            challenge_of(&headers),
            Some(bearer("https://t", None, None))
        );
        assert_eq!(challenge_of(&HeaderMap::new()), None);
    }
}
