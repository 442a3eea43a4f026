-- q3: local item suggestion. Who is selling in OR, ID or CA in category 10 (a regular join).
CREATE TABLE nexmark_q3 (name STRING, city STRING, state STRING, id BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH (${SINK});
INSERT INTO nexmark_q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
