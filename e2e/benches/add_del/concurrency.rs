//! The concurrency run: many sandboxes at once, per mode.

use super::*;

/// `count` sandboxes ADDed by `parallelism` workers, then DELeted the same way: (ADD wall time, DEL wall time,
/// leaks: interfaces and leases left after the DELs, failed calls). A failed call is reported and counted, not fatal.
pub(crate) fn concurrent_run(
    setup: &Setup,
    mode: &str,
    count: usize,
    parallelism: usize,
    lease_dir: &Path,
    uids: Option<&Vec<String>>,
    after_adds: impl FnOnce(),
) -> (Duration, Duration, usize, usize) {
    let namespace = format!("bench-c-{mode}");
    let netns: Vec<Netns> = (0..count).map(|_| Netns::new()).collect();
    let ids: Vec<String> = (0..count).map(|i| format!("conc-{mode}-{i}")).collect();
    let args: Vec<String> = (0..count)
        .map(|i| match uids {
            Some(u) => pod_args(&namespace, &format!("pod-{i}"), &u[i], &ids[i]),
            None => String::new(),
        })
        .collect();
    // bare keeps each sandbox's results for its DEL.
    let bare_results: Vec<Mutex<Vec<Option<Value>>>> =
        (0..count).map(|_| Mutex::new(Vec::new())).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let run = |command: CniCommand| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..parallelism {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let path = netns[i].path();
                        if mode == "bare" {
                            bare_one(setup, command, &ids[i], &path, &bare_results[i]);
                        } else {
                            let binary = setup.binary(mode);
                            if let Err(e) = try_exec(
                                None,
                                binary,
                                command.as_str(),
                                &ids[i],
                                &path,
                                &setup.plugins,
                                &args[i],
                                &setup.configs[mode],
                            ) {
                                eprintln!("{mode}: {e}");
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        start.elapsed()
    };
    let add = run(CniCommand::Add);
    after_adds();
    let del = run(CniCommand::Del);
    let leaks = netns.iter().map(|n| n.link_names().len()).sum::<usize>() + leases(lease_dir).len();
    (add, del, leaks, failed.into_inner())
}

/// One sandbox's three delegates, ADD in order or DEL in reverse, as [`bare`] does.
pub(crate) fn bare_one(
    setup: &Setup,
    command: CniCommand,
    id: &str,
    netns: &str,
    results: &Mutex<Vec<Option<Value>>>,
) {
    let dirs = [setup.plugins.clone()];
    let mut kept = results.lock().unwrap();
    if command == CniCommand::Add {
        *kept = bare_add(&setup.lists, &dirs, id, netns);
    } else {
        bare_del(&setup.lists, &dirs, id, netns, &kept);
    }
}
