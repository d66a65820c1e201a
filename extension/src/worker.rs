//! The maintenance background worker: when the library is preloaded, it connects to
//! `echovalue.maintenance_database` and every `echovalue.maintenance_interval` seconds calls
//! `echovalue.maintenance_run()`, one transaction per batch, while batches come back full.
//!
//! Like pg_cron's launcher it does nothing clever: an error ends the process and the
//! postmaster restarts it after `RESTART_AFTER`.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

use crate::gucs;

/// Back-off before the postmaster restarts a worker that failed.
const RESTART_AFTER: Duration = Duration::from_secs(30);
/// Most batches per wake-up, so one run cannot monopolise the worker between SIGTERM checks.
const MAX_ROUNDS: u32 = 100;

/// Registers the worker; called from `_PG_init` only while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("echovalue maintenance")
        .set_type("echovalue maintenance")
        .set_library("echovalue")
        .set_function("echovalue_maintenance_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

/// Entry point the postmaster calls in the worker process.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn echovalue_maintenance_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::maintenance_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("echovalue maintenance worker started in database \"{database}\"");

    let mut last_run = Instant::now();
    loop {
        let interval = Duration::from_secs(gucs::MAINTENANCE_INTERVAL.get().max(1) as u64);
        let remaining = interval.saturating_sub(last_run.elapsed());
        if !BackgroundWorker::wait_latch(Some(remaining.max(Duration::from_millis(10)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to re-read postgresql.conf after SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if last_run.elapsed() < interval {
            continue;
        }
        run_rounds();
        last_run = Instant::now();
    }
    log!("echovalue maintenance worker exiting");
    // Exit code 1 asks the postmaster for a restart after RESTART_AFTER: a SIGTERM that is not
    // a shutdown (DROP DATABASE ... WITH (FORCE), pg_terminate_backend) must not end
    // maintenance for good. During shutdown the postmaster restarts nothing anyway.
    // SAFETY: proc_exit runs the normal backend exit callbacks and does not return.
    unsafe { pg_sys::proc_exit(1) };
}

/// Runs batches until one comes back short, or the round limit, or SIGTERM.
fn run_rounds() {
    for _ in 0..MAX_ROUNDS {
        if BackgroundWorker::sigterm_received() || !BackgroundWorker::transaction(run_batch) {
            return;
        }
    }
}

/// One maintenance batch in the current transaction; true when some table had a full batch
/// (more may be waiting).
fn run_batch() -> bool {
    let installed = Spi::get_one::<bool>(
        "select exists (select 1 from pg_catalog.pg_extension where extname = 'echovalue')",
    );
    if !matches!(installed, Ok(Some(true))) {
        return false;
    }
    let full = Spi::get_one::<bool>(
        "select coalesce(bool_or(c.value::bigint >= pg_catalog.current_setting('echovalue.maintenance_batch')::bigint), false)
           from pg_catalog.jsonb_each_text(echovalue.maintenance_run()) as c",
    );
    match full {
        Ok(Some(more)) => more,
        Ok(None) => false,
        Err(e) => {
            warning!("echovalue maintenance run failed: {e}");
            false
        }
    }
}
