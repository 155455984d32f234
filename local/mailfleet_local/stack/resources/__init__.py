"""One creator per resource type: `create_<type>(deployer, logical_id, properties)`
makes the resource in moto and returns what !Ref and !GetAtt give for it."""
