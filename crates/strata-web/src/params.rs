//! A run's parameters read off its command line, for comparing runs: `--lr 0.1`,
//! `--lr=0.1`, a bare flag `--fp16` (`true`) and Hydra-style `lr=0.1` overrides.

use std::collections::BTreeMap;

/// The parameters of `command` (its program and script are not parameters).
pub fn parameters(command: &[String]) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut args = command.iter().peekable();
    while let Some(arg) = args.next() {
        if let Some(option) = arg.strip_prefix("--").filter(|o| !o.is_empty()) {
            if let Some((key, value)) = option.split_once('=') {
                params.insert(key.to_string(), value.to_string());
                continue;
            }
            let value = args.next_if(|next| !next.starts_with("--"));
            params.insert(
                option.to_string(),
                value.cloned().unwrap_or_else(|| "true".to_string()),
            );
            continue;
        }
        if let Some((key, value)) = arg.split_once('=') {
            if is_key(key) {
                params.insert(key.to_string(), value.to_string());
            }
        }
    }
    params
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(command: &str) -> Vec<(String, String)> {
        let command: Vec<String> = command.split(' ').map(String::from).collect();
        parameters(&command).into_iter().collect()
    }

    #[test]
    fn options_flags_and_overrides() {
        assert_eq!(
            params("python train.py --lr 0.1 --epochs=3 --fp16 --seed 7 model.depth=12"),
            [
                ("epochs", "3"),
                ("fp16", "true"),
                ("lr", "0.1"),
                ("model.depth", "12"),
                ("seed", "7")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(params("python train.py").is_empty());
        // A value that looks like a negative number is a value, not an option.
        assert_eq!(params("run --delta -1")[0].1, "-1");
    }
}
