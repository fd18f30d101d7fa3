//! Progress bars for pull and push: one bar per layer (indicatif), or nothing with
//! `--quiet` / when stderr is not a terminal (then one line per finished layer).

use super::{short, st};
use anyhow::{anyhow, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kura_proto::v1 as pb;
use std::collections::HashMap;
use std::io::IsTerminal;

struct Bars {
    mp: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    tty: bool,
    quiet: bool,
    reported: HashMap<String, String>,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let tty = std::io::stderr().is_terminal();
        let mp = if quiet || !tty {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        Bars {
            mp,
            bars: HashMap::new(),
            tty,
            quiet,
            reported: HashMap::new(),
        }
    }

    fn update(&mut self, layers: &[pb::LayerProgress]) {
        for l in layers {
            if self.quiet {
                continue;
            }
            if !self.tty {
                let st = l.status.as_str();
                if matches!(st, "done" | "exists" | "failed")
                    && self.reported.get(&l.digest).map(String::as_str) != Some(st)
                {
                    eprintln!("{}: {st}", short(&l.digest));
                    self.reported.insert(l.digest.clone(), st.to_string());
                }
                continue;
            }
            let b = self.bars.entry(l.digest.clone()).or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new(l.total.max(0) as u64));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap()
                    .progress_chars("=> "),
                );
                b.set_prefix(short(&l.digest));
                b
            });
            b.set_length(l.total.max(0) as u64);
            b.set_position(l.offset.max(0) as u64);
            b.set_message(l.status.clone());
            if matches!(l.status.as_str(), "done" | "exists") && !b.is_finished() {
                b.finish();
            }
        }
    }

    fn end(&self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

pub async fn pull(
    mut s: tonic::Streaming<pb::PullProgress>,
    quiet: bool,
) -> Result<pb::PullProgress> {
    let mut bars = Bars::new(quiet);
    let mut last_msg = String::new();
    loop {
        match s.message().await {
            Ok(Some(p)) => {
                if !quiet && p.message != last_msg && !p.message.is_empty() {
                    last_msg = p.message.clone();
                    bars.mp.suspend(|| eprintln!("{last_msg}"));
                }
                bars.update(&p.layers);
                if p.image.is_some() {
                    bars.end();
                    return Ok(p);
                }
            }
            Ok(None) => {
                bars.end();
                return Err(anyhow!("kurad ended the pull without a result"));
            }
            Err(e) => {
                bars.end();
                return Err(st(e));
            }
        }
    }
}

pub async fn push(mut s: tonic::Streaming<pb::PushProgress>, quiet: bool) -> Result<String> {
    let mut bars = Bars::new(quiet);
    loop {
        match s.message().await {
            Ok(Some(p)) => {
                bars.update(&p.layers);
                if !p.pushed_digest.is_empty() {
                    bars.end();
                    return Ok(p.pushed_digest);
                }
            }
            Ok(None) => {
                bars.end();
                return Err(anyhow!("kurad ended the push without a result"));
            }
            Err(e) => {
                bars.end();
                return Err(st(e));
            }
        }
    }
}
