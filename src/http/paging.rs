//! Keyset paging shared by the listings (manuals, turns): a page is read with one row
//! more than it shows, and the cursor names the last row shown as `{unix secs}.{id}`.

use uuid::Uuid;

use crate::error::AppError;

/// The page size asked for, within `1..=max`.
pub fn limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, AppError> {
    let limit = asked.unwrap_or(default);
    if (1..=max).contains(&limit) { Ok(limit) } else { Err(AppError::BadRequest(format!("limit must be 1 to {max}"))) }
}

pub fn parse_cursor(cursor: &str) -> Result<(u64, Uuid), AppError> {
    let bad = || AppError::BadRequest(format!("invalid cursor {cursor:?}: pass a next_cursor as it was given"));
    let (at, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// Cuts rows read with `limit + 1` to `limit`; the cursor of the last when more follow.
pub fn page<T>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> (u64, Uuid)) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = rows.last().filter(|_| more).map(|row| {
        let (at, id) = key(row);
        format!("{at}.{id}")
    });
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_bad_one_is_refused() {
        let id = Uuid::new_v4();
        let (rows, next) = page(vec![(5, id), (6, Uuid::new_v4())], 1, |r| *r);
        assert_eq!(rows.len(), 1);
        assert_eq!(parse_cursor(&next.unwrap()).unwrap(), (5, id));
        assert_eq!(page(vec![(5, id)], 1, |r| *r).1, None, "the last page has no cursor");
        assert!(parse_cursor("5-x").is_err() && parse_cursor("x.y").is_err());
        assert!(limit(Some(0), 50, 200).is_err() && limit(Some(201), 50, 200).is_err());
        assert_eq!(limit(None, 50, 200).unwrap(), 50);
    }
}
