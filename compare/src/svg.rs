//! The run's tables as one picture, written beside the markdown (`RESULTS.md` → `RESULTS.svg`):
//! a panel per scenario, in it a pair of horizontal bars per client, p50 (dark) over p99
//! (light), on a logarithmic µs scale of the panel's own; the floors in grey, finwatch in blue,
//! the other clients in orange; each floor's p50 also a dashed vertical line across the panel;
//! lost commands as a red "✗ N lost" beside the client's figures. Hand-written SVG 1.1, no
//! script, no external reference: it renders the same in a browser, an image viewer or GitHub.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::stats::{Summary, us};
use crate::{Config, ScenarioResult};

/// Where the picture goes: the markdown's path with `.svg` for its extension.
pub fn path_beside(md: &Path) -> PathBuf {
    let p = md.with_extension("svg");
    if p == md { PathBuf::from(format!("{}.svg", md.display())) } else { p }
}

const WIDTH: f64 = 1100.0;
/// The client labels end here (right-aligned).
const LABEL_END: f64 = 270.0;
/// The bars' area: from `BAR_START` (the panel's lowest value) `BAR_WIDTH` wide.
const BAR_START: f64 = 280.0;
const BAR_WIDTH: f64 = 540.0;
/// The figures' column (p50 / p99 µs, lost commands).
const FIGURES: f64 = 835.0;
const ROW: f64 = 22.0;
const PANEL_HEAD: f64 = 56.0;
/// Rows for the floors' labels above a panel.
const LABEL_ROWS: usize = 3;
const PANEL_FOOT: f64 = 34.0;

/// Text safe in an SVG element or a double-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The colours of a row: (p50, p99).
fn colours(key: &str) -> (&'static str, &'static str) {
    if key.starts_with("floor") {
        ("#555555", "#bbbbbb")
    } else if key.starts_with("finwatch") {
        ("#1f5fa8", "#9cc1ea")
    } else {
        ("#c8641e", "#f2c49e")
    }
}

/// The dashed line of each floor's p50 (by its order among the floors).
const FLOOR_LINES: [&str; 4] = ["#222222", "#7a3fb0", "#1a8a5a", "#b0306a"];

/// 1, 2, 5 × 10^k µs from below `lo` to above `hi`: the panel's scale and its ticks (ns).
fn scale(lo: u64, hi: u64) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = (lo.max(100) as f64, hi.max(lo.max(100) + 1) as f64);
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    loop {
        for m in [1.0, 2.0, 5.0] {
            ticks.push(decade * m);
        }
        if decade * 10.0 > hi * 1.0001 {
            break;
        }
        decade *= 10.0;
    }
    ticks.push(decade * 10.0);
    let start = ticks.iter().copied().rfind(|&t| t <= lo).unwrap_or(ticks[0]);
    let end = ticks.iter().copied().find(|&t| t >= hi).unwrap_or(*ticks.last().unwrap());
    ticks.retain(|&t| t >= start && t <= end);
    (start, end, ticks)
}

/// The x of `ns` on the scale from `start` to `end` (ns), logarithmic.
fn x_of(ns: f64, start: f64, end: f64) -> f64 {
    let f = (ns.max(start).ln() - start.ln()) / (end.ln() - start.ln());
    BAR_START + BAR_WIDTH * f.clamp(0.0, 1.0)
}

/// A tick's label: µs, without trailing zeros.
fn tick_label(ns: f64) -> String {
    let u = ns / 1000.0;
    if u >= 1.0 { format!("{u:.0}") } else { format!("{u}") }
}

/// The picture of the run: a panel per scenario. `md_name`: the markdown file it goes with.
pub fn render(cfg: &Config, results: &[ScenarioResult], md_name: &str) -> String {
    let mut body = String::new();
    let mut y = 70.0;
    for r in results {
        y = panel(&mut body, cfg, r, y);
    }
    let height = y + 10.0;
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(&format!(
            "finwatch latency comparison{}: p50 and p99 per client (µs, log scale per panel)",
            if cfg.on_link() {
                format!(", emulated link {} µs each way", cfg.link_delay.as_micros())
            } else {
                String::new()
            }
        ))
    );
    let _ = writeln!(
        o,
        r##"<text x="10" y="40" fill="#444444">{}</text>"##,
        esc(&format!(
            "Pooled over every round of the run (nearest rank, answered commands). Tables, regimes and \
             verdicts: {md_name}."
        ))
    );
    // Legend.
    let mut lx = 10.0;
    for (name, key) in [("floors", "floor"), ("finwatch", "finwatch"), ("other clients", "other")] {
        let (dark, light) = colours(key);
        let _ = writeln!(o, r#"<rect x="{lx}" y="50" width="14" height="6" fill="{dark}"/>"#);
        let _ = writeln!(o, r#"<rect x="{lx}" y="57" width="14" height="6" fill="{light}"/>"#);
        let _ = writeln!(o, r#"<text x="{}" y="61">{} p50 / p99</text>"#, lx + 18.0, esc(name));
        lx += 170.0;
    }
    let _ = writeln!(
        o,
        r##"<line x1="{lx}" y1="56" x2="{}" y2="56" stroke="#222222" stroke-dasharray="4 3"/>"##,
        lx + 20.0
    );
    let _ = writeln!(o, r#"<text x="{}" y="61">a floor's p50</text>"#, lx + 24.0);
    let _ = writeln!(
        o,
        r##"<text x="{}" y="61" fill="#cc0000">✗ N lost: commands never answered</text>"##,
        lx + 130.0
    );
    o.push_str(&body);
    let _ = writeln!(o, "</svg>");
    o
}

/// Draws one scenario's panel from `y` down; returns where the next one starts.
fn panel(o: &mut String, cfg: &Config, r: &ScenarioResult, y: f64) -> f64 {
    let sums: Vec<Summary> = r.records.iter().map(|rec| rec.summary()).collect();
    let ran: Vec<usize> = (0..cfg.clients.len()).filter(|&i| r.not_run[i].is_none()).collect();
    let lo = ran.iter().filter_map(|&i| sums[i].p50).min();
    let hi = ran.iter().filter_map(|&i| sums[i].p99.or(sums[i].p50)).max();
    let (start, end, ticks) = scale(lo.unwrap_or(1_000) * 4 / 5, hi.unwrap_or(100_000));
    let rows = cfg.clients.len() as f64;
    let top = y + PANEL_HEAD;
    let bottom = top + rows * ROW;
    let _ = writeln!(o, r#"<g>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y + 16.0,
        esc(&crate::report::title(r.scenario, cfg))
    );
    let _ = writeln!(
        o,
        r##"<rect x="{BAR_START}" y="{}" width="{BAR_WIDTH}" height="{}" fill="#fafafa" stroke="#dddddd"/>"##,
        top - 4.0,
        rows * ROW + 4.0
    );
    for &t in &ticks {
        let x = x_of(t, start, end);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}" stroke="#e4e4e4"/>"##,
            top - 4.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#555555">{}</text>"##,
            bottom + 14.0,
            tick_label(t)
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555555">µs</text>"##,
        BAR_START + BAR_WIDTH / 2.0,
        bottom + 28.0
    );
    let _ = writeln!(o, r##"<text x="{FIGURES}" y="{}" fill="#555555">p50 / p99 µs</text>"##, top - 8.0);
    for (row, (i, kind)) in cfg.clients.iter().enumerate().enumerate() {
        let ry = top + row as f64 * ROW;
        let weight = if kind.key.starts_with("finwatch") { r#" font-weight="bold""# } else { "" };
        let _ = writeln!(
            o,
            r#"<text x="{LABEL_END}" y="{}" text-anchor="end"{weight}>{}</text>"#,
            ry + 13.0,
            esc(kind.label)
        );
        if let Some(e) = &r.not_run[i] {
            let _ = writeln!(
                o,
                r##"<text x="{}" y="{}" fill="#888888" font-style="italic">not run: {}</text>"##,
                BAR_START + 4.0,
                ry + 13.0,
                esc(&shorten(e))
            );
            continue;
        }
        let (dark, light) = colours(kind.key);
        let s = sums[i];
        for (k, (p, fill)) in [(s.p50, dark), (s.p99, light)].into_iter().enumerate() {
            if let Some(ns) = p {
                let w = (x_of(ns as f64, start, end) - BAR_START).max(1.0);
                let _ = writeln!(
                    o,
                    r#"<rect x="{BAR_START}" y="{:.1}" width="{w:.1}" height="8" fill="{fill}"><title>{}</title></rect>"#,
                    ry + 2.0 + k as f64 * 9.0,
                    esc(&format!(
                        "{} {}: {} µs",
                        kind.label,
                        if k == 0 { "p50" } else { "p99" },
                        us(Some(ns))
                    ))
                );
            }
        }
        let _ = write!(o, r#"<text x="{FIGURES}" y="{}">{} / {}"#, ry + 13.0, us(s.p50), us(s.p99));
        let failed = r.records[i].failed;
        if failed > 0 {
            let _ = write!(o, r##"<tspan dx="8" fill="#cc0000" font-weight="bold">✗ {failed} lost</tspan>"##);
        }
        let _ = writeln!(o, "</text>");
    }
    // The floors' p50s across the panel, each labelled above it in the first of three rows
    // where the label does not run into the one before (floors' p50s are often close).
    let mut floors: Vec<(usize, usize, f64)> = (0..cfg.clients.len())
        .filter(|&i| cfg.clients[i].key.starts_with("floor") && r.not_run[i].is_none())
        .enumerate()
        .filter_map(|(n, i)| sums[i].p50.map(|p| (n, i, x_of(p as f64, start, end))))
        .collect();
    floors.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut row_end = [f64::MIN; LABEL_ROWS];
    for (n, i, x) in floors {
        let colour = FLOOR_LINES[n % FLOOR_LINES.len()];
        let label = format!("{} p50", cfg.clients[i].key);
        let width = label.chars().count() as f64 * 5.6;
        let row = (0..LABEL_ROWS).find(|&k| row_end[k] < x).unwrap_or(LABEL_ROWS - 1);
        row_end[row] = x + 2.0 + width + 4.0;
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}" stroke="{colour}" stroke-width="1.2" stroke-dasharray="4 3"/>"#,
            y + 20.0 + row as f64 * 10.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" font-size="10" fill="{colour}">{}</text>"#,
            x + 2.0,
            y + 28.0 + row as f64 * 10.0,
            esc(&label)
        );
    }
    let _ = writeln!(o, "</g>");
    bottom + PANEL_FOOT
}

fn shorten(e: &str) -> String {
    let e = e.replace('\n', " ");
    if e.chars().count() > 80 { format!("{}…", e.chars().take(80).collect::<String>()) } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    /// A small XML well-formedness check: tags balanced and properly nested, one root, attribute
    /// values quoted, no `<` in text or values, every `&` an entity. Enough for what `render`
    /// writes (no comments, CDATA or DOCTYPE).
    fn well_formed(doc: &str) -> Result<(), String> {
        let entity_ok = |s: &str| -> Result<(), String> {
            let mut rest = s;
            while let Some(k) = rest.find('&') {
                rest = &rest[k + 1..];
                let end = rest.find(';').ok_or(format!("a bare & in {s:?}"))?;
                let name = &rest[..end];
                let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || (name.starts_with('#') && name[1..].chars().all(|c| c.is_ascii_alphanumeric()));
                if !ok {
                    return Err(format!("unknown entity &{name}; in {s:?}"));
                }
                rest = &rest[end + 1..];
            }
            Ok(())
        };
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = doc;
        if let Some(decl) = rest.strip_prefix("<?xml") {
            rest = &decl[decl.find("?>").ok_or("unterminated declaration")? + 2..];
        }
        loop {
            let Some(lt) = rest.find('<') else {
                if !rest.trim().is_empty() && stack.is_empty() {
                    return Err(format!("text after the root: {rest:?}"));
                }
                entity_ok(rest)?;
                break;
            };
            let text = &rest[..lt];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            entity_ok(text)?;
            let gt = rest[lt..].find('>').ok_or("unterminated tag")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let (tag, closed) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = &tag[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-') {
                return Err(format!("bad tag name {name:?}"));
            }
            // Attributes: name="value", separated by whitespace.
            let mut attrs = tag[name_end..].trim();
            while !attrs.is_empty() {
                let eq = attrs.find("=\"").ok_or(format!("attribute without =\"…\": {attrs:?}"))?;
                let an = &attrs[..eq];
                if an.is_empty() || an.contains(char::is_whitespace) {
                    return Err(format!("bad attribute name {an:?}"));
                }
                let value_end = attrs[eq + 2..].find('"').ok_or("unterminated attribute value")?;
                let value = &attrs[eq + 2..eq + 2 + value_end];
                if value.contains('<') {
                    return Err(format!("< in an attribute value: {value:?}"));
                }
                entity_ok(value)?;
                attrs = attrs[eq + 2 + value_end + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !closed {
                stack.push(name);
            }
        }
        if let Some(open) = stack.last() {
            return Err(format!("<{open}> never closed"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    #[test]
    fn the_checker_rejects_what_is_not_well_formed() {
        assert_eq!(well_formed(r#"<a x="1"><b/>t &amp; u</a>"#), Ok(()));
        for bad in ["<a><b></a></b>", "<a>x & y</a>", "<a x=1></a>", "<a>", "<a/><b/>", r#"<a x="<"/>"#] {
            assert!(well_formed(bad).is_err(), "{bad}");
        }
        assert_eq!(esc(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    /// Two scenarios, one with a client that lost commands and one not run: a panel each, the
    /// losses in red, and a document that parses.
    #[test]
    fn the_picture_is_well_formed_and_marks_lost_commands() {
        let mut cfg = Config::full();
        cfg.clients = ["floor-blocking", "floor-spare", "finwatch", "minreq"]
            .iter()
            .map(|k| crate::clients::find(k).unwrap())
            .collect();
        let result = |sc: Scenario, lost: u64| {
            let records = [30u64, 60, 55, 90]
                .iter()
                .map(|&u| {
                    let mut r = crate::stats::Record { ok: 100, ..Default::default() };
                    r.add_round((0..100).map(|k| u * 1000 + k * 100).collect());
                    r
                })
                .collect::<Vec<_>>();
            let mut r = ScenarioResult {
                scenario: sc,
                records,
                not_run: vec![None; 4],
                notes: vec![None; 4],
                elapsed: std::time::Duration::ZERO,
                group: vec![0; 4],
            };
            r.records[3].failed = lost;
            r
        };
        let mut b = result(Scenario::Fin, 7);
        b.not_run[1] = Some("cannot build <it> & so on".into());
        let svg = render(&cfg, &[result(Scenario::KeepAlive, 0), b], "RESULTS.md");
        assert_eq!(well_formed(&svg), Ok(()), "{svg}");
        assert!(svg.contains("✗ 7 lost"), "{svg}");
        assert_eq!(svg.matches("✗ 7 lost").count(), 1);
        assert!(svg.contains("(a) keep-alive") && svg.contains("(b) FIN after every response"));
        assert!(svg.contains("not run: cannot build &lt;it&gt; &amp; so on"));
        assert!(svg.contains("floor-blocking p50") && svg.contains("floor-spare p50"));
        // p50 and p99 bars: two per client that ran, in each panel.
        assert_eq!(svg.matches(r#"height="8""#).count(), 2 * 4 + 2 * 3);
    }

    #[test]
    fn the_scale_covers_the_values_with_round_ticks() {
        let (start, end, ticks) = scale(7_000, 130_000);
        assert_eq!((start, end), (5_000.0, 200_000.0));
        assert_eq!(ticks, vec![5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0, 200_000.0]);
        assert!((x_of(5_000.0, start, end) - BAR_START).abs() < 1e-9);
        assert!((x_of(200_000.0, start, end) - BAR_START - BAR_WIDTH).abs() < 1e-9);
        assert_eq!(tick_label(500.0), "0.5");
        assert_eq!(
            path_beside(Path::new("compare/RESULTS-link.md")),
            PathBuf::from("compare/RESULTS-link.svg")
        );
        assert_eq!(path_beside(Path::new("/tmp/x.svg")), PathBuf::from("/tmp/x.svg.svg"));
        assert_eq!(path_beside(Path::new("/tmp/x")), PathBuf::from("/tmp/x.svg"));
    }
}
