//! Which CPU each of the daemon's busy threads runs on: every proxy event loop on a core of its
//! own, for good, and the usage writer beside the last loop (`cpu_affinity = true`, the
//! default).
//!
//! Why: a loop per core (see `event_loops`) pays only while each loop stays on its core.
//! Measured on the 2-core benchmark machine at concurrency 16 (JSON): with no other thread of
//! ours awake, the loops, the load generator and the mock provider settled on the cores, 3 %
//! of the machine idle and a handful of migrations in four seconds; any thread of ours that
//! woke every few milliseconds to work (the usage writer's commits, or a bare spinning thread
//! in its place) broke that up: hundreds of migrations a second, short idle gaps on one core
//! while threads queued on the other, 15 % idle. With the loops and the writer pinned, JSON throughput at concurrency 16 went from
//! 0.72× to 0.77× the bare proxy's (three interleaved runs each; concurrency 64 unchanged).
//! nginx (`worker_cpu_affinity auto`) and thread-per-core runtimes such as Seastar pin the
//! same way.
//!
//! The cores are those the process may run on when it starts (a container's or `taskset`'s
//! set is respected). Pinning is best effort: a refusal is logged and the thread runs free.
//! On a host where other busy processes share the cores, `cpu_affinity = false` lets the
//! scheduler move the loops away from them.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The CPUs the process was allowed at start-up, in order, and which thread goes where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPlan {
    cpus: Vec<usize>,
}

impl CpuPlan {
    /// The calling thread's allowed CPUs (at start-up, the process's); `None` if the kernel
    /// will not say.
    pub fn of_current_thread() -> Option<CpuPlan> {
        let set = sched_getaffinity(None).ok()?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect();
        CpuPlan::new(cpus)
    }

    /// A plan over `cpus`; `None` when there is none.
    pub fn new(cpus: Vec<usize>) -> Option<CpuPlan> {
        (!cpus.is_empty()).then_some(CpuPlan { cpus })
    }

    /// The CPU for event loop `index` (1-based): one each, round the set again if there are
    /// more loops than CPUs.
    pub fn for_loop(&self, index: usize) -> usize {
        self.cpus[index.saturating_sub(1) % self.cpus.len()]
    }

    /// The CPU for background work (the usage writer): the last one, shared with the last
    /// loop, so a commit takes its turn on one core instead of landing on whichever core the
    /// scheduler picks and moving a loop off it.
    pub fn for_background(&self) -> usize {
        self.cpus[self.cpus.len() - 1]
    }
}

/// Pins the calling thread to `cpu`. `what` names the thread in the warning if the kernel
/// refuses (the thread then runs anywhere, as it would unpinned).
pub fn pin_current_thread(cpu: usize, what: &str) {
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(err) = sched_setaffinity(None, &set) {
        tracing::warn!(thread = what, cpu, error = %err, "could not pin thread to its CPU; it runs unpinned");
    }
}

/// The CPUs the calling thread may run on (tests and start-up logging).
pub fn current_thread_cpus() -> Vec<usize> {
    sched_getaffinity(None)
        .map(|set| {
            (0..CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_take_one_cpu_each_in_order_and_wrap_around() {
        let plan = CpuPlan::new(vec![2, 3, 6]).expect("plan");
        let placed: Vec<usize> = (1..=5).map(|i| plan.for_loop(i)).collect();
        assert_eq!(placed, [2, 3, 6, 2, 3]);
    }

    #[test]
    fn background_work_shares_the_last_cpu() {
        assert_eq!(CpuPlan::new(vec![0, 1]).expect("plan").for_background(), 1);
        assert_eq!(CpuPlan::new(vec![5]).expect("plan").for_background(), 5);
    }

    #[test]
    fn an_empty_set_makes_no_plan() {
        assert_eq!(CpuPlan::new(Vec::new()), None);
    }

    #[test]
    fn a_pinned_thread_runs_on_that_cpu_only() {
        let plan = CpuPlan::of_current_thread().expect("the test process has CPUs");
        let cpu = plan.for_background();
        let seen = std::thread::spawn(move || {
            pin_current_thread(cpu, "test");
            (current_thread_cpus(), rustix::thread::sched_getcpu())
        })
        .join()
        .expect("thread");
        assert_eq!(seen, (vec![cpu], cpu));
    }
}
