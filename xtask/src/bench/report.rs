//! The benchmark's report: the table of ratios against the anchors, with
//! the goals of issue #14, as Markdown and as JSON.

use super::*;

pub(super) struct Report<'a> {
    pub(super) size: u64,
    pub(super) files: u64,
    pub(super) runs: usize,
    pub(super) rows: &'a [Row],
    pub(super) zstd_decode: f64,
    pub(super) sha256sum: f64,
    pub(super) sha2: f64,
    pub(super) rss: &'a BTreeMap<u64, u64>,
    pub(super) stubs: &'a BTreeMap<String, u64>,
    pub(super) reads: Reads,
}

/// Bytes read from the bundle file (strace of every read of it).
pub(super) struct Reads {
    pub(super) bundle: u64,
    pub(super) install: u64,
    /// `None` when the install ended before it could be killed half-way.
    pub(super) rerun: Option<u64>,
}

const RSS_GOAL: u64 = 64 << 20;
const STUB_GOAL: u64 = 1 << 20;

fn ratio(ours: f64, other: Option<f64>) -> Option<f64> {
    other.filter(|o| *o > 0.0).map(|o| ours / o)
}

pub(super) fn verdict(r: Option<f64>, goal: Option<f64>) -> &'static str {
    match (r, goal) {
        (Some(r), Some(g)) if r <= g => "met",
        (Some(_), Some(_)) => "NOT met",
        _ => "",
    }
}

impl Report<'_> {
    pub(super) fn markdown(&self) -> String {
        let mut s = format!(
            "# nxs-survival benchmark\n\nCorpus: {} in {} files (40 % incompressible), medians of {} rounds, \
             contenders alternated each round; every timed command ends with `sync`.\n\n\
             | step | nxs-survival | shell pipeline | ratio | goal | makeself | ratio | goal |\n\
             |---|---|---|---|---|---|---|---|\n",
            mib(self.size),
            self.files,
            self.runs
        );
        let f = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.2}{unit}")).unwrap_or_else(|| "-".into());
        for r in self.rows {
            let (rp, rm) = (ratio(r.ours, r.pipeline), ratio(r.ours, r.makeself));
            s.push_str(&format!(
                "| {} | {:.2} s | {} | {} | {} {} | {} | {} | {} {} |\n",
                r.name,
                r.ours,
                f(r.pipeline, " s"),
                f(rp, ""),
                r.goal_pipeline.map(|g| format!("≤ {g}")).unwrap_or_default(),
                verdict(rp, r.goal_pipeline),
                f(r.makeself, " s"),
                f(rm, ""),
                r.goal_makeself.map(|g| format!("≤ {g}")).unwrap_or_default(),
                verdict(rm, r.goal_makeself),
            ));
        }
        s.push_str(&format!(
            "\nThe shell pipeline: build `tar -c | zstd -T0 -3` + `sha256sum` of every file + `minisign -S`; \
             install `minisign -V` + `zstd -d -T0 | tar -x` + `sha256sum -c`; verify `minisign -V` + `sha256sum` \
             of the archive; backup `tar -c | zstd -T0 -3 | age -R`; restore `age -d | zstd -d | tar -x` (ours \
             stages and checks in one pass, and swaps in only what matched); the unverified extraction \
             (`zstd -d -T0 | tar -x` of the same payload, nothing checked) is the floor. makeself: `makeself --zstd --sha256`, and the archive extracting itself (`--noexec`).\n\n\
             Ceilings on this machine: `zstd -d -T0 > /dev/null` {:.0} MB/s of tar; `sha256sum` {:.0} MB/s; \
             the sha2 crate {:.0} MB/s. Our install at this size: {:.0} MB/s of tar.\n\n\
             | peak RSS of the stub during install | |\n|---|---|\n",
            self.zstd_decode,
            self.sha256sum,
            self.sha2,
            self.size as f64 / 1e6 / self.rows[1].ours
        ));
        for (size, rss) in self.rss {
            s.push_str(&format!(
                "| {} corpus | {} {} |\n",
                mib(*size),
                mib(*rss),
                if *rss <= RSS_GOAL { "(≤ 64 MiB: met)" } else { "(> 64 MiB: NOT met)" }
            ));
        }
        let r = &self.reads;
        let x = |n: u64| n as f64 / r.bundle as f64;
        s.push_str(&format!(
            "\n| bytes read from the bundle ({}) | bytes | × its size | goal | at 30 MB/s (USB 2.0) |\n|---|---|---|---|---|\n\
             | install | {} | {:.3} | ≤ 1.05 {} | {:.1} s |\n\
             | rerun after a kill half-way through its reads | {} | {} | ≤ 0.6 {} | {} |\n",
            mib(r.bundle),
            r.install,
            x(r.install),
            verdict(Some(x(r.install)), Some(1.05)),
            r.install as f64 / USB_BYTES_PER_SEC,
            r.rerun.map(|n| n.to_string()).unwrap_or_else(|| "not caught half-way".into()),
            r.rerun.map(|n| format!("{:.3}", x(n))).unwrap_or_default(),
            verdict(r.rerun.map(x), Some(0.6)),
            r.rerun.map(|n| format!("{:.1} s", n as f64 / USB_BYTES_PER_SEC)).unwrap_or_default(),
        ));
        s.push_str("\n| stub | bytes | ≤ 1 MiB |\n|---|---|---|\n");
        for (t, n) in self.stubs {
            s.push_str(&format!("| {t} | {n} | {} |\n", if *n <= STUB_GOAL { "met" } else { "NOT met" }));
        }
        s
    }

    pub(super) fn json(&self) -> String {
        let num = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "null".into());
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}:{{\"ours_s\":{:.4},\"pipeline_s\":{},\"makeself_s\":{},\"ratio_pipeline\":{},\"ratio_makeself\":{},\"goal_pipeline\":{},\"goal_makeself\":{}}}",
                    json::s(r.name),
                    r.ours,
                    num(r.pipeline),
                    num(r.makeself),
                    num(ratio(r.ours, r.pipeline)),
                    num(ratio(r.ours, r.makeself)),
                    num(r.goal_pipeline),
                    num(r.goal_makeself)
                )
            })
            .collect();
        let rss: Vec<String> =
            self.rss.iter().map(|(s, r)| format!("{{\"corpus_bytes\":{s},\"peak_rss_bytes\":{r}}}")).collect();
        let stubs: Vec<String> = self.stubs.iter().map(|(t, n)| format!("{}:{n}", json::s(t))).collect();
        format!(
            "{{\"corpus_bytes\":{},\"files\":{},\"runs\":{},{},\"bundle_reads\":{{\"bundle_bytes\":{},\"install_bytes\":{},\"rerun_after_kill_at_half_bytes\":{}}},\"ceilings_mb_s\":{{\"zstd_decode\":{:.1},\"sha256sum\":{:.1},\"sha2\":{:.1}}},\"peak_rss\":[{}],\"stub_bytes\":{{{}}}}}\n",
            self.size,
            self.files,
            self.runs,
            rows.join(","),
            self.reads.bundle,
            self.reads.install,
            self.reads.rerun.map(|n| n.to_string()).unwrap_or_else(|| "null".into()),
            self.zstd_decode,
            self.sha256sum,
            self.sha2,
            rss.join(","),
            stubs.join(",")
        )
    }
}
