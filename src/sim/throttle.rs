//! Misbehaviour on purpose: ARM's token bucket (429 + `Retry-After`) and injected faults.
//!
//! Pure bookkeeping with an explicit clock; the server decides when to consult it.

use std::time::Instant;

/// ARM-like request bucket: each ARM request takes one token; tokens refill continuously.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketOptions {
    /// Tokens when full (Azure: 250 reads per subscription and region).
    pub capacity: u32,
    /// Tokens added per second (Azure: 25 reads).
    pub refill_per_sec: f64,
}

impl BucketOptions {
    /// ARM's read bucket per subscription: 250 tokens, refilled 25 a second (Microsoft's
    /// "Understand how Azure Resource Manager throttles requests", the regional token-bucket
    /// limits in force since 2024).
    pub const AZURE_READS: BucketOptions = BucketOptions {
        capacity: 250,
        refill_per_sec: 25.0,
    };
    /// ARM's write bucket (and delete bucket) per subscription: 200 tokens, refilled 10 a
    /// second (the same page).
    pub const AZURE_WRITES: BucketOptions = BucketOptions {
        capacity: 200,
        refill_per_sec: 10.0,
    };
}

/// Compute's "Low Cost Get VM" throttling policy: GET of a VM (instance view included) and
/// `retrieveBootDiagnosticsData` each take a token from the VM's bucket and from the
/// subscription's (per region). Microsoft's "Compute throttling limits": per resource a bucket
/// of 36 refilled 12 a minute, per subscription 24,000 refilled 8,000 a minute. Answers report
/// both in `x-ms-ratelimit-remaining-resource`, as Azure CLI's recordings of 2026 show:
/// `Microsoft.Compute/LowCostGetSubscriptionMaximum;23997,Microsoft.Compute/LowCostGetResource;33`.
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeGetBuckets {
    /// The subscription's bucket (policy `LowCostGetSubscriptionMaximum`).
    pub subscription: BucketOptions,
    /// Each VM's bucket (policy `LowCostGetResource`).
    pub resource: BucketOptions,
}

impl ComputeGetBuckets {
    /// Azure's limits.
    pub const AZURE: ComputeGetBuckets = ComputeGetBuckets {
        subscription: BucketOptions {
            capacity: 24_000,
            refill_per_sec: 8_000.0 / 60.0,
        },
        resource: BucketOptions {
            capacity: 36,
            refill_per_sec: 12.0 / 60.0,
        },
    };
}

/// A fault injected in place of the real answer. The first matching fault wins.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// HTTP method to match ("GET", "POST"...), any when `None`.
    pub method: Option<String>,
    /// Substring of path + query to match ("" matches every request but `/_sim`).
    pub path_contains: String,
    /// What to answer.
    pub kind: FaultKind,
    /// How many times it fires; `None` = always.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on every request whose path contains `path_contains`.
    pub fn new(path_contains: &str, kind: FaultKind) -> Fault {
        Fault {
            method: None,
            path_contains: path_contains.to_owned(),
            kind,
            times: None,
        }
    }

    /// Limits the fault to one HTTP method.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_owned());
        self
    }

    /// Lets the fault fire only `n` times.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }
}

/// The kind of injected failure.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// This HTTP status with an ARM error body `{"error":{"code":...,"message":...}}`.
    Status(u16),
    /// This HTTP status with this raw body.
    StatusBody(u16, String),
    /// 200 with a truncated JSON body.
    Malformed,
    /// Never answers (until the simulator shuts down).
    Hang,
    /// Carries the request out (a write changes the world and starts its operation), then
    /// answers this status instead of the real answer: a 5xx after Azure acted, the case
    /// Microsoft's Retry pattern (learn.microsoft.com/azure/architecture/patterns/retry,
    /// idempotency) names as the reason not to retry operations that are not idempotent.
    AppliedThenStatus(u16),
    /// Carries the request out, then never answers: the response is lost and the client's
    /// timeout fires, with the write already accepted.
    AppliedThenHang,
}

/// Token bucket state.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    options: BucketOptions,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(options: BucketOptions, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(options.capacity),
            options,
            last: now,
        }
    }

    /// Returns a token taken for a request that was refused elsewhere.
    pub(crate) fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(f64::from(self.options.capacity));
    }

    /// Takes one token: `Ok(remaining)` or `Err(retry_after_seconds)`.
    pub(crate) fn take(&mut self, now: Instant) -> Result<u32, u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let capacity = f64::from(self.options.capacity);
        self.tokens = (self.tokens + elapsed * self.options.refill_per_sec).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // Whole tokens only; the cast is safe because tokens <= capacity (a u32).
            Ok(self.tokens.floor() as u32)
        } else if self.options.refill_per_sec > 0.0 {
            let wait = ((1.0 - self.tokens) / self.options.refill_per_sec).ceil();
            Err((wait as u64).max(1))
        } else {
            // A bucket that never refills: tell the client to come back much later.
            Err(3600)
        }
    }
}

/// Injected faults with how often each may still fire.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    faults: Vec<(Fault, Option<u32>)>,
}

impl Faults {
    pub(crate) fn new(faults: &[Fault]) -> Faults {
        Faults {
            faults: faults.iter().map(|f| (f.clone(), f.times)).collect(),
        }
    }

    /// The first fault matching this request that may still fire; uses one of its `times`.
    pub(crate) fn take(&mut self, method: &str, path_and_query: &str) -> Option<FaultKind> {
        let (fault, left) = self.faults.iter_mut().find(|(fault, left)| {
            left.is_none_or(|n| n > 0)
                && fault
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_and_query.contains(&fault.path_contains)
        })?;
        if let Some(n) = left {
            *n -= 1;
        }
        Some(fault.kind.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_empties_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            BucketOptions {
                capacity: 2,
                refill_per_sec: 0.5,
            },
            start,
        );
        assert_eq!(bucket.take(start), Ok(1));
        assert_eq!(bucket.take(start), Ok(0));
        assert_eq!(bucket.take(start), Err(2));
        assert_eq!(bucket.take(start + Duration::from_secs(2)), Ok(0));
    }

    #[test]
    fn fault_fires_times_then_stops() {
        let mut faults = Faults::new(&[Fault::new("virtualMachines", FaultKind::Status(500))
            .method("GET")
            .times(2)]);
        assert_eq!(faults.take("POST", "/x/virtualMachines"), None);
        assert_eq!(
            faults.take("GET", "/x/virtualMachines"),
            Some(FaultKind::Status(500))
        );
        assert!(faults.take("get", "/x/virtualMachines").is_some());
        assert_eq!(faults.take("GET", "/x/virtualMachines"), None);
    }
}
