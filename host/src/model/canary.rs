//! A canary rebind: a share of a step's runs goes to a candidate (an instance and the digest it
//! is pinned to), the rest to the step's own binding, until the candidate's error rate passes
//! its bound (rolled back) or its minimum runs pass within it (promoted: the step is rebound).

use super::Digest;
use serde::{Deserialize, Serialize};

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryState {
    /// Runs are split between the arms.
    Running,
    /// The minimum runs passed within the bound; waiting to be promoted on request (runs are
    /// still split).
    Passed,
    /// The candidate failed too often, or someone rolled it back: every run takes the step's
    /// own binding.
    RolledBack,
    /// The step is rebound to the candidate.
    Promoted,
}

/// Which arm of a canary a step run took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    Stable,
    Candidate,
}

/// A canary on one step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    pub flow: i64,
    pub step: String,
    /// The step's own binding when the canary started.
    pub stable_instance: i64,
    #[schema(value_type = String)]
    pub stable_digest: Digest,
    /// The candidate: an instance and the digest it runs (`org/name@version` and revision
    /// beside it).
    pub candidate_instance: i64,
    #[schema(value_type = String)]
    pub candidate_digest: Digest,
    pub candidate: String,
    pub candidate_revision: u32,
    /// Share of runs (0–100) that take the candidate, by a hash of the run id.
    pub percent: u8,
    /// Highest share of the candidate's runs that may fail (0–1).
    pub max_error_rate: f64,
    /// Candidate runs before the canary is decided.
    pub min_runs: u32,
    /// Promote by itself once passed (else wait for a request).
    pub auto_promote: bool,
    pub state: CanaryState,
    pub started_by: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub stable_runs: u32,
    pub stable_errors: u32,
    pub candidate_runs: u32,
    pub candidate_errors: u32,
    /// The runs the candidate took (they decide it), and those of them that failed.
    pub candidate_run_ids: Vec<i64>,
    pub candidate_failed_runs: Vec<i64>,
}

impl Canary {
    /// Whether runs are split between the arms.
    pub fn splitting(&self) -> bool {
        matches!(self.state, CanaryState::Running | CanaryState::Passed)
    }

    /// The arm run `run` takes: the candidate for `percent` of run ids, by a hash of the id.
    pub fn arm(&self, run: i64) -> Arm {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(run.to_le_bytes());
        let bucket = u64::from_le_bytes(hash[..8].try_into().expect("8 bytes")) % 100;
        if bucket < u64::from(self.percent) {
            Arm::Candidate
        } else {
            Arm::Stable
        }
    }

    /// The candidate's error rate so far.
    pub fn error_rate(&self) -> f64 {
        if self.candidate_runs == 0 {
            0.0
        } else {
            f64::from(self.candidate_errors) / f64::from(self.candidate_runs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_follow_the_share_and_the_run_id_alone() {
        let mut canary = Canary {
            flow: 1,
            step: "s".into(),
            stable_instance: 1,
            stable_digest: Digest::of(b"a"),
            candidate_instance: 2,
            candidate_digest: Digest::of(b"b"),
            candidate: "x@1.0.0".into(),
            candidate_revision: 1,
            percent: 50,
            max_error_rate: 0.1,
            min_runs: 5,
            auto_promote: true,
            state: CanaryState::Running,
            started_by: "t".into(),
            started_at: 0,
            ended_at: None,
            stable_runs: 0,
            stable_errors: 0,
            candidate_runs: 0,
            candidate_errors: 0,
            candidate_run_ids: vec![],
            candidate_failed_runs: vec![],
        };
        let candidates = (1..=1000)
            .filter(|&id| canary.arm(id) == Arm::Candidate)
            .count();
        assert!((400..=600).contains(&candidates), "{candidates}");
        assert_eq!(canary.arm(7), canary.arm(7));
        canary.percent = 0;
        assert!((1..=1000).all(|id| canary.arm(id) == Arm::Stable));
        canary.percent = 100;
        assert!((1..=1000).all(|id| canary.arm(id) == Arm::Candidate));
    }
}
