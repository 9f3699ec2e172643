-- What a layer changed (added, modified, deleted entries and bytes), computed
-- from the layer's own rows the first time someone asks and kept here once
-- the layer is frozen (frozen layers never change). NULL: not computed yet.
ALTER TABLE layers ADD COLUMN counts bigint[];
