//! Reading a Prometheus exposition in tests, and `promtool` checks.

use std::process::Stdio;

/// One series: name, labels, value.
pub type Series = (String, Vec<(String, String)>, f64);

/// Parsed exposition.
#[derive(Debug)]
pub struct Scrape(pub Vec<Series>);

/// `name{k="v",…}` → the name and the label pairs.
pub fn parse_series(series: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), Vec::new());
    };
    let mut labels = Vec::new();
    let mut rest = rest.trim_end_matches('}');
    while let Some((key, tail)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let mut end = tail.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &tail[end..];
    }
    (name.to_owned(), labels)
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| {
                    let (series, value) = l.rsplit_once(' ').unwrap();
                    let (name, labels) = parse_series(series);
                    (name, labels, value.parse().unwrap())
                })
                .collect(),
        )
    }

    /// The sum of the series named so whose labels include those given
    /// (`name{k="v"}`); 0 when there are none (a family not touched yet).
    pub fn get(&self, series: &str) -> f64 {
        let (name, wanted) = parse_series(series);
        self.0
            .iter()
            .filter(|(n, labels, _)| *n == name && wanted.iter().all(|w| labels.contains(w)))
            .map(|(_, _, value)| value)
            .sum()
    }

    pub fn has_family(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// Every series name.
    pub fn names(&self) -> std::collections::BTreeSet<&str> {
        self.0.iter().map(|(n, _, _)| n.as_str()).collect()
    }
}

pub async fn scrape_text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// `promtool check metrics` on `text`. Without promtool the check is
/// skipped loudly — except in CI, where scripts/setup installs it.
pub fn promtool_check(text: &str, what: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing in CI: scripts/setup installs the `prometheus` package"
            );
            eprintln!(
                "\n**********\n* promtool NOT INSTALLED: the {what} exposition was NOT checked \
                 (apt-get install prometheus, or run scripts/setup)\n**********\n"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {what} exposition: {said}\n{text}"
    );
}

/// `promtool check config` on the example Prometheus config (skipped
/// loudly without promtool, except in CI).
pub fn promtool_check_config(path: &std::path::Path) {
    match std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
    {
        Ok(out) => assert!(out.status.success(), "{out:?}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing in CI"
            );
            eprintln!(
                "\n**********\n* promtool NOT INSTALLED: {} was NOT checked\n**********\n",
                path.display()
            );
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}
