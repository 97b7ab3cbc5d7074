//! "Did you mean ...?" for configuration typos: the closest known name by edit distance.

/// Edit distance counting an adjacent transposition as one edit (optimal string alignment),
/// case-insensitive. Heap-free (the control file is parsed inside hook paths): names longer
/// than 47 bytes are "far" from everything.
pub fn distance(a: &str, b: &str) -> usize {
    const W: usize = 48;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() >= W || b.len() >= W {
        return usize::MAX;
    }
    let lower = |c: u8| c.to_ascii_lowercase();
    // Three rows: two back (for transpositions), one back, current.
    let mut pp = [0usize; W];
    let mut prev = [0usize; W];
    let mut cur = [0usize; W];
    for (j, p) in prev.iter_mut().enumerate().take(b.len() + 1) {
        *p = j;
    }
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(lower(a[i - 1]) != lower(b[j - 1]));
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]) {
                v = v.min(pp[j - 2] + 1);
            }
            cur[j] = v;
        }
        pp = prev;
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos() {
        assert_eq!(distance("ENOTCON", "ENOTCONN"), 1);
        assert_eq!(distance("inof", "info"), 1);
        assert_eq!(closest("ENOTCON", ["EPIPE", "ENOTCONN"]), Some("ENOTCONN"));
        assert_eq!(closest("shutdwon", ["shutdown", "close"]), Some("shutdown"));
        assert_eq!(closest("xyz", ["shutdown", "close"]), None);
    }
}
