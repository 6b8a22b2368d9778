%% @doc The erlmcp_fixture application and its top supervisor: an
%% erlmcp-like service whose only job is to own a session store
%% (erlmcp_session_store) so that migctl has a real node to migrate.
%%
%% If the configured backends include erlmcp_session_mnesia, mnesia is
%% started first. A schema is never created unless the application env
%% `mnesia_create_schema' is true (then a single-node disc schema is made on
%% this node when there is none); multi-node schemas are the job of
%% migctl, the test kit or scripts/devcluster.sh.
%%
%% The store server is erlmcp_session_store (the fixture's: it forwards
%% stray messages to the backend and can switch backends) unless the
%% application env has {store_server, erlmcp}: then erlmcp_session_server,
%% shaped like erlmcp's own server, which drops every message it does not
%% know. Both register as erlmcp_session_store.
%%
%% When the store is up the node prints "erlmcp_fixture ready ..." on its
%% standard output, which scripts can wait for.
-module(erlmcp_fixture).
-behaviour(application).
-behaviour(supervisor).

-export([start/2, stop/1, init/1]).

start(_Type, _Args) ->
    case maybe_start_mnesia() of
        ok ->
            case supervisor:start_link({local, erlmcp_fixture_sup}, ?MODULE, []) of
                {ok, Pid} ->
                    {B, _, _} = erlmcp_session_store:config(),
                    io:format(user, "erlmcp_fixture ready node=~s backend=~s server=~s~n",
                              [node(), B, server_module()]),
                    {ok, Pid};
                Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

stop(_State) ->
    ok.

init([]) ->
    M = server_module(),
    Store = #{id => erlmcp_session_store,
              start => {M, start_link, []},
              restart => permanent,
              shutdown => 10000,
              type => worker,
              modules => [M]},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Store]}}.

server_module() ->
    case application:get_env(erlmcp_fixture, store_server, fixture) of
        erlmcp -> erlmcp_session_server;
        _ -> erlmcp_session_store
    end.

maybe_start_mnesia() ->
    {Backend, Opts, _} = erlmcp_session_store:config(),
    Mods = [Backend | [M || K <- [primary_backend, secondary_backend],
                            {ok, M} <- [maps:find(K, Opts)]]],
    case lists:member(erlmcp_session_mnesia, Mods) of
        false ->
            ok;
        true ->
            case application:get_env(erlmcp_fixture, mnesia_create_schema, false) of
                true -> maybe_create_schema();
                false -> ok
            end,
            case application:ensure_all_started(mnesia) of
                {ok, _} -> ok;
                {error, Reason} -> {error, {mnesia_start_failed, Reason}}
            end
    end.

maybe_create_schema() ->
    case mnesia:system_info(is_running) of
        yes -> ok;
        _ ->
            case mnesia:create_schema([node()]) of
                ok -> ok;
                {error, {_, {already_exists, _}}} -> ok;
                {error, Reason} -> logger:warning("mnesia:create_schema: ~p", [Reason])
            end
    end.
