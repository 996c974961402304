//! The privacy accountants against Opacus 1.6 (fixture: `tools/make_dp_fixture.py`): RDP
//! within 1e-6 relative, PRV within Opacus's own ε error, and the solved noise multiplier
//! within Opacus's search tolerance.

use serde_json::Value;
use tunekit::dp::accountant::{Accountant, Composition, noise_multiplier, rdp};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dp/opacus_accountants.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k}"))
}

fn history(c: &Value) -> Vec<Composition> {
    vec![Composition {
        noise_multiplier: f(c, "noise_multiplier"),
        sample_rate: f(c, "sample_rate"),
        steps: c["steps"].as_u64().expect("steps") as usize,
    }]
}

#[test]
fn rdp_curve_and_epsilon_equal_opacus_within_1e_6_relative() {
    let fx = fixture();
    for c in fx["epsilon"].as_array().expect("cases") {
        let h = history(c);
        let orders: Vec<f64> = c["rdp_orders"]
            .as_array()
            .expect("orders")
            .iter()
            .map(|v| v.as_f64().expect("order"))
            .collect();
        let ours = rdp::rdp(&h, &orders);
        for ((o, a), b) in orders
            .iter()
            .zip(&ours)
            .zip(c["rdp_curve"].as_array().expect("curve"))
        {
            let b = b.as_f64().expect("rdp");
            assert!(
                (a - b).abs() <= 1e-6 * b.abs(),
                "order {o}: {a} vs opacus {b} ({c})"
            );
        }
        let eps = Accountant::Rdp.epsilon(&h, f(c, "delta")).expect("rdp");
        let want = f(c, "rdp_epsilon");
        assert!(
            (eps - want).abs() <= 1e-6 * want,
            "rdp ε {eps} vs opacus {want} ({c})"
        );
    }
}

#[test]
fn prv_epsilon_equals_opacus_within_its_eps_error() {
    let fx = fixture();
    for c in fx["epsilon"].as_array().expect("cases") {
        let eps = Accountant::Prv
            .epsilon(&history(c), f(c, "delta"))
            .expect("prv");
        let want = f(c, "prv_epsilon");
        let tol = f(c, "prv_eps_error");
        assert!(
            (eps - want).abs() <= tol,
            "prv ε {eps} vs opacus {want} ({c})"
        );
        // Tighter than RDP, as it should be.
        assert!(
            eps < f(c, "rdp_epsilon"),
            "prv ε {eps} not below rdp's ({c})"
        );
    }
}

#[test]
fn solved_noise_multiplier_equals_opacus_within_its_search_tolerance() {
    let fx = fixture();
    for c in fx["noise_multiplier"].as_array().expect("cases") {
        let acc = match c["accountant"].as_str() {
            Some("prv") => Accountant::Prv,
            _ => Accountant::Rdp,
        };
        let (target, delta, q) = (f(c, "target_epsilon"), f(c, "delta"), f(c, "sample_rate"));
        let steps = c["steps"].as_u64().expect("steps") as usize;
        let sigma = noise_multiplier(acc, target, delta, q, steps).expect("solve");
        let want = f(c, "noise_multiplier");
        // Same search, same accountant values: the same σ up to the bisection's last step.
        assert!(
            (sigma - want).abs() <= 1e-6 * want,
            "σ {sigma} vs opacus {want} ({c})"
        );
        let spent = acc
            .epsilon(
                &[Composition {
                    noise_multiplier: sigma,
                    sample_rate: q,
                    steps,
                }],
                delta,
            )
            .expect("eps");
        let tol = f(c, "epsilon_tolerance");
        assert!(
            spent <= target && target - spent <= tol,
            "ε at σ: {spent} ({c})"
        );
    }
}

#[test]
fn a_budget_no_noise_reaches_is_refused() {
    let err = noise_multiplier(Accountant::Rdp, 1e-4, 1e-5, 0.5, 100_000).unwrap_err();
    assert!(err.to_string().contains("budget is too low"), "{err}");
}
