-- embedlab store, version 8: pixel statistics that anomaly scores judge against the collection
-- (embedlab/anomaly.py, computed by images.pixel_statistics). NULL for images embedded before
-- this version: the next `embed` decodes those files once more and fills them in.
ALTER TABLE images ADD COLUMN saturation REAL;   -- mean HSV saturation, 0-1
ALTER TABLE images ADD COLUMN correlation REAL;  -- of neighbouring grey pixels (0: noise, 1: smooth or flat)
ALTER TABLE images ADD COLUMN edges REAL;        -- share of pixels with a grey gradient above 32 levels
ALTER TABLE images ADD COLUMN flat REAL;         -- share of pixels with a grey gradient below 1 level
ALTER TABLE images ADD COLUMN top_colours REAL;  -- share of pixels in the 4 most common colours (4 bits a channel)
ALTER TABLE images ADD COLUMN colours REAL;      -- how many such colours cover 95 % of the pixels
