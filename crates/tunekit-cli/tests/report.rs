//! The run report: every training run writes `report.html`; `tunekit report` rewrites it from
//! the run's files; real headless Chromium lays the page out and every figure is present and
//! non-empty (a screenshot is kept in `target/report-screenshot.png` for a human to look at).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Figures the page must show for a classification run with validation and test splits.
const FIGURES: [&str; 7] = [
    "fig-loss",
    "fig-metric",
    "fig-lr",
    "fig-confusion",
    "fig-roc",
    "fig-pr",
    "fig-calibration",
];

/// Debian's `chromium` (installed by `.ci/run`), or `TUNEKIT_CHROMIUM`.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("TUNEKIT_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium is needed for the report test: apt-get install chromium (.ci/run does)"
    );
}

/// Run Chromium headless with the flags this closed-network machine needs.
fn headless(profile: &Path, args: &[String]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("start chromium")
}

/// Script appended to a copy of the page: after layout, measure every figure's SVG (rendered
/// size and drawn elements) and write the result into the DOM, which `--dump-dom` prints.
const CHECK_SCRIPT: &str = r#"<script>
window.addEventListener('load', () => {
  const out = {};
  for (const f of document.querySelectorAll('figure')) {
    const svg = f.querySelector('svg');
    const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    let drawn = 0, inked = 0;
    if (svg) {
      for (const el of svg.querySelectorAll('polyline,path,rect,circle,line,polygon,text')) {
        drawn++;
        const b = el.getBBox();
        if (b.width > 0 || b.height > 0) inked++;
      }
    }
    out[f.id] = {width: r.width, height: r.height, drawn, inked, missing: f.classList.contains('missing')};
  }
  const pre = document.createElement('pre');
  pre.id = 'tk-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

#[test]
fn every_run_writes_a_report_whose_figures_render_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "");
    let out = tunekit(&["train", cfg.to_str().unwrap(), "--set", "train.epochs=3"]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let run = tmp.path().join("runs/tiny");
    let page_path = run.join("report.html");
    let page = std::fs::read_to_string(&page_path).expect("train writes report.html");

    // Per-example predictions agree with the recorded confusion matrix.
    let metrics = json(&run.join("metrics.json"));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("predictions/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 48);
    let cm = &metrics["test"]["confusion_matrix"];
    for t in 0..2 {
        for p in 0..2 {
            let n = rows
                .iter()
                .filter(|r| r["label"] == t && r["predicted"] == p)
                .count() as u64;
            assert_eq!(cm[t][p].as_u64().unwrap(), n, "cell [{t}][{p}]");
        }
    }

    // Self-contained: no scripts, no external resources.
    for banned in ["<script", "src=", "href=", "@import", "url("] {
        assert!(
            !page.contains(banned),
            "report must be self-contained, found {banned}"
        );
    }
    for id in FIGURES {
        assert!(
            page.contains(&format!("id=\"{id}\"")),
            "figure {id} missing"
        );
    }
    assert!(
        !page.contains("class=\"plot missing\""),
        "a figure is missing"
    );
    // The most-confident-errors table and the data summary are there.
    assert!(page.contains("id=\"confident-errors\""));
    assert!(page.contains("De-duplication:"));

    // `tunekit report` regenerates the same page from the run's files.
    std::fs::remove_file(&page_path).unwrap();
    let out = tunekit(&["report", run.to_str().unwrap()]);
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&page_path).unwrap(), page);

    // Real layout in headless Chromium: every figure has a rendered size and drawn marks.
    let check = tmp.path().join("check.html");
    std::fs::write(
        &check,
        page.replace("</body>", &format!("{CHECK_SCRIPT}</body>")),
    )
    .unwrap();
    let profile = tmp.path().join("chromium-profile");
    let out = headless(
        &profile,
        &[
            "--window-size=1400,1000".into(),
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", check.display()),
        ],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"tk-check\">").unwrap_or_else(|| {
        panic!(
            "chromium did not run the check: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let body = &dom[start + "<pre id=\"tk-check\">".len()..];
    let body = &body[..body.find("</pre>").unwrap()];
    let body = body.replace("&quot;", "\"").replace("&amp;", "&");
    let figures: serde_json::Value = serde_json::from_str(&body).unwrap();
    for id in FIGURES {
        let f = &figures[id];
        assert_eq!(f["missing"], false, "{id}: {f}");
        assert!(f["width"].as_f64().unwrap() > 300.0, "{id} too narrow: {f}");
        assert!(f["height"].as_f64().unwrap() > 150.0, "{id} too short: {f}");
        assert!(f["inked"].as_u64().unwrap() >= 10, "{id} looks empty: {f}");
    }

    // A screenshot of the whole page, kept for people to look at.
    let shot = root().join("target/report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &profile,
        &[
            "--window-size=1400,3200".into(),
            format!("--screenshot={}", shot.display()),
            format!("file://{}", page_path.display()),
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 50_000,
        "screenshot suspiciously small: {} bytes",
        png.len()
    );
}

#[test]
fn report_on_a_directory_that_is_not_a_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tunekit(&["report", tmp.path().to_str().unwrap()]);
    assert_bad_input(&out, &["metrics.json", "not a finished training run"]);
}
