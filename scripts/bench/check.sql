-- Consistency checks over a benchmark database, as one row of named counts (psql -x shows them
-- one per line). Every count named *_bad must be 0.
--
--   active_routes_bad      (person, proxy number) pairs held by more than one participant
--                          active now: invariant 1, what participants_one_route guarantees
--   overlapping_routes_bad participants whose active_during overlaps an earlier one for the same
--                          (person, proxy number), over the whole history: the same, for every
--                          instant, not only now
--   range_copy_bad         participants whose active_during or released differs from their
--                          pairing's (the copies the triggers keep)
--   pool_participant_bad   participants whose real number is a pool number
--   dangling_bad           participants whose pairing or proxy numbers do not exist
--   load_counter_bad       pool numbers whose active_load differs from their active participants
SELECT
    (SELECT count(*) FROM participants) AS participants,
    (SELECT count(*) FROM pairings WHERE active_during @> now()) AS active_pairings,
    (SELECT count(*) FROM pool_numbers) AS pool_numbers,
    (SELECT count(*) FROM (
        SELECT 1 FROM participants WHERE active_during @> now()
         GROUP BY number, proxy_number HAVING count(*) > 1) d) AS active_routes_bad,
    (SELECT count(*) FROM (
        SELECT lower(active_during) < max(upper(active_during)) OVER (
                   PARTITION BY number, proxy_number ORDER BY lower(active_during)
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS overlap
          FROM participants WHERE NOT isempty(active_during)) o
      WHERE overlap) AS overlapping_routes_bad,
    (SELECT count(*) FROM participants t JOIN pairings p ON p.id = t.pairing_id
      WHERE t.active_during IS DISTINCT FROM p.active_during
         OR t.released IS DISTINCT FROM p.released) AS range_copy_bad,
    (SELECT count(*) FROM participants t JOIN pool_numbers n ON n.number = t.number)
        AS pool_participant_bad,
    (SELECT count(*) FROM participants t
      WHERE NOT EXISTS (SELECT 1 FROM pairings p WHERE p.id = t.pairing_id)
         OR NOT EXISTS (SELECT 1 FROM pool_numbers n WHERE n.number = t.proxy_number)
         OR NOT EXISTS (SELECT 1 FROM pool_numbers n WHERE n.number = t.counterpart_proxy))
        AS dangling_bad,
    (SELECT count(*) FROM pool_numbers n
       LEFT JOIN (SELECT proxy_number, count(*) AS c FROM participants
                   WHERE active_during @> now() GROUP BY proxy_number) a
              ON a.proxy_number = n.number
      WHERE n.active_load <> coalesce(a.c, 0)) AS load_counter_bad;
