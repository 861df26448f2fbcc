//! Counts in words, as the human output says them: "1 page", "2 pages", "0 pages".

/// `n` and `word`, with an "s" unless `n` is one: `plural(1, "dead letter")` is "1 dead letter".
pub fn plural<N>(n: N, word: &str) -> String
where
    N: Copy + std::fmt::Display + TryInto<i64>,
{
    let s = if n.try_into().is_ok_and(|n: i64| n == 1) { "" } else { "s" };
    format!("{n} {word}{s}")
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(1, "page"), "1 page");
        assert_eq!(plural(1usize, "dead letter"), "1 dead letter");
        assert_eq!(plural(0i64, "record"), "0 records");
        assert_eq!(plural(2u32, "frame"), "2 frames");
        assert_eq!(plural(-1, "frame"), "-1 frames");
    }
}
