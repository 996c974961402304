//! The cfg guard of issue 23 part 2: x86-specific code (`std::arch::x86_64`, `asm!`,
//! `is_x86_feature_detected!`, `target_feature`, AMX's `arch_prctl`) is never reachable on
//! another architecture without its cfg, so tunekit builds on aarch64. No aarch64 standard
//! library can be installed offline here, so `scripts/check-cfg-guard.sh` checks the sources
//! statically; these tests run it on the workspace and on small crates that break the rule.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the guard on `root`: (passed, its output).
fn guard(root: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(workspace().join("scripts/check-cfg-guard.sh"))
        .arg(root)
        .output()
        .expect("bash runs the guard script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A throwaway workspace with one crate made of `files` (path under `src/`, contents).
fn fixture(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root =
        std::env::temp_dir().join(format!("tunekit-cfg-guard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (path, body) in files {
        let p = root.join("crates/demo/src").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    root
}

#[test]
fn every_x86_specific_use_in_the_workspace_is_behind_its_cfg() {
    let (ok, out) = guard(&workspace());
    assert!(ok, "unguarded x86-specific code:\n{out}");
    assert!(out.contains("files checked"), "{out}");
}

/// A fixture's name, its files (path under `src/`, contents), and whether the guard passes.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

#[test]
fn the_guard_fails_on_unguarded_x86_code_and_passes_guarded_code() {
    const SIMD: &str = "use std::arch::x86_64::*;\npub fn f() {}\n";
    let cases: &[Case] = &[
        (
            "mod-without-cfg",
            &[("lib.rs", "mod simd;\n"), ("simd.rs", SIMD)],
            false,
        ),
        (
            "mod-with-cfg",
            &[
                ("lib.rs", "#[cfg(target_arch = \"x86_64\")]\nmod simd;\n"),
                ("simd.rs", SIMD),
            ],
            true,
        ),
        (
            "mod-with-not-cfg",
            &[
                (
                    "lib.rs",
                    "#[cfg(not(target_arch = \"x86_64\"))]\nmod simd;\n",
                ),
                ("simd.rs", SIMD),
            ],
            false,
        ),
        (
            "nested-mod-inherits",
            &[
                (
                    "lib.rs",
                    "#[cfg(all(target_arch = \"x86_64\", unix))]\npub mod a;\n",
                ),
                ("a/mod.rs", "mod b;\n"),
                (
                    "a/b.rs",
                    "pub fn f() { unsafe { core::arch::asm!(\"nop\") } }\n",
                ),
            ],
            true,
        ),
        (
            "inner-attribute",
            &[
                ("lib.rs", "mod simd;\n"),
                (
                    "simd.rs",
                    &*format!("#![cfg(target_arch = \"x86_64\")]\n{SIMD}"),
                ),
            ],
            true,
        ),
        (
            "detection-in-plain-fn",
            &[(
                "lib.rs",
                "pub fn f() -> bool {\n    std::arch::is_x86_feature_detected!(\"avx2\")\n}\n",
            )],
            false,
        ),
        (
            "detection-in-cfg-block",
            &[(
                "lib.rs",
                "pub fn f() -> bool {\n    #[cfg(target_arch = \"x86_64\")]\n    {\n        \
                 if std::arch::is_x86_feature_detected!(\"avx2\") { return true; }\n    }\n    \
                 false\n}\n",
            )],
            true,
        ),
        (
            "target-feature-fn",
            &[(
                "lib.rs",
                "#[target_feature(enable = \"avx2\")]\nunsafe fn f() {}\n",
            )],
            false,
        ),
        (
            "arch-prctl-needs-linux",
            &[(
                "lib.rs",
                "#[cfg(target_arch = \"x86_64\")]\nfn f() { let _ = libc::SYS_arch_prctl; }\n",
            )],
            false,
        ),
        (
            "mentions-in-comments-and-strings",
            &[(
                "lib.rs",
                "// uses std::arch::x86_64 elsewhere\n/// is_x86_feature_detected!\n\
                 pub const S: &str = \"asm!(nop)\";\n",
            )],
            true,
        ),
    ];
    for (name, files, want_ok) in cases {
        let root = fixture(name, files);
        let (ok, out) = guard(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(ok, *want_ok, "{name}: {out}");
        if !want_ok {
            assert!(out.contains("without cfg"), "{name}: {out}");
        }
    }
}
